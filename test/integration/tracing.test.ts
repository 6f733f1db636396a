/**
 * Tracing end to end against a real OTLP/HTTP receiver: spans made through the helpers the proxy
 * and the worker call, exported by the real SDK, read back as a collector sees them. Real HTTP on
 * both sides of the spans: the client's headers arrive through node:http, the injected ones
 * leave through undici, as in the worker.
 */
import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:http";
import type { IncomingHttpHeaders, IncomingMessage, Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createLogger } from "../../src/log.js";
import {
  DISABLED_TRACING,
  SlowlaneAttributes,
  endSpan,
  fromCarrier,
  carrierFromHeaders,
  injectTraceHeaderRecord,
  injectTraceHeaders,
  isJobTraceCarrier,
  logFields,
  startAttemptSpan,
  startClientSpan,
  startServerSpan,
  startTracing,
  toCarrier,
} from "../../src/tracing/index.js";
import type { Tracing } from "../../src/tracing/index.js";
import { OtlpSpanKind, OtlpStatusCode, createOtlpReceiver } from "../helpers/otlp-receiver.js";
import type { OtlpReceiver, ReceivedSpan } from "../helpers/otlp-receiver.js";
import { waitFor } from "../helpers/wait.js";

/** Every variable startTracing or the SDK reads that a test sets; cleared before each start. */
const OTEL_VARS = [
  "OTEL_SDK_DISABLED",
  "OTEL_TRACES_EXPORTER",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  "OTEL_EXPORTER_OTLP_PROTOCOL",
  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
  "OTEL_SERVICE_NAME",
  "OTEL_RESOURCE_ATTRIBUTES",
  "OTEL_TRACES_SAMPLER",
  "OTEL_TRACES_SAMPLER_ARG",
] as const;

const TRACE_ID = (n: number) => n.toString(16).padStart(32, "a");
const CLIENT_SPAN_ID = "00f067aa0ba902b7";

let receiver: OtlpReceiver;
/** Stands in for the proxy's listener: hands each request to `onRequest`, answers 204. */
let front: Server;
let onRequest: (req: IncomingMessage) => void = () => undefined;
/** Stands in for the backend: keeps the headers of every call. */
let backend: Server;
const backendCalls: IncomingHttpHeaders[] = [];
let frontUrl = "";
let backendUrl = "";

async function listen(server: Server): Promise<string> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Sends one request to the front server and returns what `handle` made of it there. */
async function receive<T>(path: string, headers: Record<string, string>, handle: (req: IncomingMessage) => T): Promise<T> {
  let result: { value: T } | undefined;
  onRequest = (req) => (result = { value: handle(req) });
  const res = await request(`${frontUrl}${path}`, { method: "POST", headers, body: "{}" });
  await res.body.dump();
  if (!result) throw new Error("the front server saw no request");
  return result.value;
}

/** Starts tracing from `process.env` with exactly these OTEL_* variables set. */
async function tracingWith(vars: Partial<Record<(typeof OTEL_VARS)[number], string>>): Promise<Tracing> {
  for (const name of OTEL_VARS) vi.stubEnv(name, vars[name]);
  return startTracing(process.env);
}

/** pino output as parsed lines (pino's own tests do the same). */
function createLineSink(): { lines: Record<string, unknown>[]; sink: Writable } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, sink };
}

const ofTrace = (traceId: string) => (spans: readonly ReceivedSpan[]) => spans.filter((s) => s.traceId === traceId);
const named = (spans: ReceivedSpan[], name: string): ReceivedSpan => {
  const span = spans.find((s) => s.name === name);
  if (!span) throw new Error(`no span named ${name} in ${spans.map((s) => s.name).join(", ")}`);
  return span;
};

beforeAll(async () => {
  receiver = await createOtlpReceiver();
  front = createServer((req, res) => {
    onRequest(req);
    req.resume();
    res.writeHead(204).end();
  });
  backend = createServer((req, res) => {
    backendCalls.push(req.headers);
    req.resume();
    res.writeHead(req.url?.startsWith("/fail") ? 503 : 200).end();
  });
  [frontUrl, backendUrl] = await Promise.all([listen(front), listen(backend)]);
});

afterEach(() => {
  vi.unstubAllEnvs();
});

afterAll(async () => {
  front.closeAllConnections();
  backend.closeAllConnections();
  await Promise.all([new Promise((r) => front.close(r)), new Promise((r) => backend.close(r)), receiver.close()]);
});

describe("tracing on (http/json)", () => {
  it("continues the client's traceparent in the server span, and its carrier survives JSON", async () => {
    const tracing = await tracingWith({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=test",
    });
    expect(tracing.enabled).toBe(true);
    const traceId = TRACE_ID(1);
    const headers = { traceparent: `00-${traceId}-${CLIENT_SPAN_ID}-01`, tracestate: "vendor=abc", authorization: "Bearer secret-token" };
    const accepted = await receive("/reports/q3?token=secret", headers, (req) => {
      const traced = startServerSpan(tracing, req, "POST reports", { [SlowlaneAttributes.route]: "reports" });
      endSpan(traced.span, { outcome: "accepted", status: 202 });
      return traced;
    });

    const sc = accepted.span.spanContext();
    expect(sc.traceId).toBe(traceId);
    const carrier = toCarrier(accepted.context);
    expect(carrier).toEqual({ traceparent: `00-${traceId}-${sc.spanId}-01`, tracestate: "vendor=abc" });
    const stored: unknown = JSON.parse(JSON.stringify({ trace: carrier })).trace;
    expect(isJobTraceCarrier(stored)).toBe(true);
    const restored = trace.getSpanContext(fromCarrier(stored as typeof carrier));
    expect(restored).toMatchObject({ traceId, spanId: sc.spanId, traceFlags: 1, isRemote: true });
    expect(restored?.traceState?.serialize()).toBe("vendor=abc");

    await tracing.shutdown();
    const [server] = ofTrace(traceId)(await receiver.waitForSpans((s) => ofTrace(traceId)(s).length === 1));
    expect(server).toMatchObject({ name: "POST reports", kind: OtlpSpanKind.Server, parentSpanId: CLIENT_SPAN_ID, spanId: sc.spanId });
    expect(server?.attributes).toMatchObject({
      "http.request.method": "POST",
      "url.path": "/reports/q3",
      "url.scheme": "http",
      "http.response.status_code": 202,
      "slowlane.route": "reports",
      "slowlane.outcome": "accepted",
    });
    expect(server?.status.code).toBe(OtlpStatusCode.Unset);
    expect(server?.serviceName).toBe("slowlane");
    expect(server?.resource["deployment.environment.name"]).toBe("test");
    // Neither the query string nor any header value leaves the process.
    expect(JSON.stringify(server)).not.toMatch(/secret/);
  });

  it("makes each attempt a child of the accept span, links it to the previous one, and hands the backend its client span", async () => {
    const tracing = await tracingWith({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.tracesUrl, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" });
    // A client without a traceparent: the accept span starts the trace.
    const accept = await receive("/reports/q3", {}, (req) => startServerSpan(tracing, req, "POST reports"));
    endSpan(accept.span, { outcome: "accepted", status: 202 });
    const carrier = toCarrier(accept.context);
    const traceId = accept.span.spanContext().traceId;

    /** One attempt as the worker would run it: attempt span, client span, the call with injected headers. */
    async function attempt(n: number, path: string, previousAttempt?: ReturnType<typeof toCarrier>) {
      const run = startAttemptSpan(tracing, carrier, { route: "reports", jobId: "job-1", attempt: n, queueWaitMs: 40 * n, previousAttempt });
      const call = startClientSpan(tracing, run.context, { method: "POST", url: `${backendUrl}${path}?sig=secret`, route: "reports", jobId: "job-1" });
      // Stored headers as accept keeps them, the client's own trace headers included.
      const pairs = ["content-type", "application/json", "TraceParent", `00-${TRACE_ID(9)}-${CLIENT_SPAN_ID}-01`, "tracestate", "client=1"];
      injectTraceHeaders(call.context, pairs);
      const res = await request(`${backendUrl}${path}`, { method: "POST", headers: pairs, body: "{}" });
      await res.body.dump();
      endSpan(call.span, { outcome: String(res.statusCode), status: res.statusCode });
      const failed = res.statusCode >= 500 ? Object.assign(new Error("the backend answered 503"), { code: "SLOWLANE_UPSTREAM_STATUS" }) : undefined;
      endSpan(run.span, { outcome: failed ? "503" : "completed", ...(failed ? { error: failed } : {}) });
      return { run, call, sent: pairs, seen: backendCalls.at(-1) };
    }
    const first = await attempt(1, "/fail");
    const second = await attempt(2, "/reports/q3", toCarrier(first.run.context));
    const callback = startClientSpan(tracing, second.run.context, { method: "POST", url: "https://user:pw@hooks.example:8443/cb?sig=secret", name: "callback" });
    endSpan(callback.span, { outcome: "404", status: 404 });
    // Passthrough's shape: Node's header object, as http-proxy-3 forwards it.
    const record: Record<string, string | string[] | undefined> = { traceparent: `00-${TRACE_ID(9)}-${CLIENT_SPAN_ID}-01`, tracestate: "client=1", accept: "*/*" };
    injectTraceHeaderRecord(callback.context, record);
    expect(record).toEqual({ traceparent: `00-${traceId}-${callback.span.spanContext().spanId}-01`, accept: "*/*" });

    // The backend got exactly one traceparent: the client span's, in the job's trace; the client's tracestate is gone with its traceparent.
    for (const { call, sent, seen } of [first, second]) {
      expect(seen?.traceparent).toBe(`00-${traceId}-${call.span.spanContext().spanId}-01`);
      expect(seen?.tracestate).toBeUndefined();
      expect(sent.filter((_, i) => i % 2 === 0 && /^traceparent$/i.test(sent[i] as string))).toHaveLength(1);
      expect(seen?.["content-type"]).toBe("application/json");
    }

    await tracing.shutdown();
    const spans = ofTrace(traceId)(await receiver.waitForSpans((s) => ofTrace(traceId)(s).length === 6));
    const acceptId = accept.span.spanContext().spanId;
    const attempts = spans.filter((s) => s.kind === OtlpSpanKind.Consumer).sort((a, b) => Number(a.attributes["slowlane.job.attempt"]) - Number(b.attributes["slowlane.job.attempt"]));
    expect(attempts.map((s) => s.parentSpanId)).toEqual([acceptId, acceptId]);
    expect(attempts[0]?.links).toEqual([]);
    expect(attempts[1]?.links.map((l) => [l.traceId, l.spanId])).toEqual([[traceId, first.run.span.spanContext().spanId]]);
    expect(attempts[0]).toMatchObject({ name: "attempt reports", status: { code: OtlpStatusCode.Error, message: "the backend answered 503" } });
    expect(attempts[0]?.attributes).toMatchObject({
      "slowlane.route": "reports",
      "slowlane.job.id": "job-1",
      "slowlane.job.attempt": 1,
      "slowlane.job.queue_wait_ms": 40,
      "slowlane.outcome": "503",
      "error.type": "SLOWLANE_UPSTREAM_STATUS",
    });
    expect(attempts[1]?.status.code).toBe(OtlpStatusCode.Unset);
    expect(attempts[1]?.attributes["slowlane.outcome"]).toBe("completed");

    const calls = spans.filter((s) => s.kind === OtlpSpanKind.Client && s.name === "POST");
    expect(calls.map((s) => s.parentSpanId).sort()).toEqual(attempts.map((s) => s.spanId).sort());
    const failedCall = calls.find((s) => s.attributes["http.response.status_code"] === 503);
    expect(failedCall?.status.code).toBe(OtlpStatusCode.Error);
    expect(failedCall?.attributes).toMatchObject({ "url.full": `${backendUrl}/fail`, "server.address": "127.0.0.1", "error.type": "503" });
    expect(calls.find((s) => s.attributes["http.response.status_code"] === 200)?.status.code).toBe(OtlpStatusCode.Unset);

    const cb = named(spans, "callback");
    expect(cb).toMatchObject({ kind: OtlpSpanKind.Client, parentSpanId: attempts[1]?.spanId, status: { code: OtlpStatusCode.Error } });
    expect(cb.attributes).toMatchObject({ "url.full": "https://hooks.example:8443/cb", "server.port": 8443, "error.type": "404" });
    expect(JSON.stringify(spans)).not.toMatch(/secret|user:pw/);
  });

  it("continues the client's trace from the stored headers when the job was accepted with tracing off", async () => {
    const tracing = await tracingWith({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" });
    const traceId = TRACE_ID(4);
    const stored = ["accept", "*/*", "traceparent", `00-${traceId}-${CLIENT_SPAN_ID}-01`, "tracestate", "a=1", "TraceState", "b=2"];
    const run = startAttemptSpan(tracing, carrierFromHeaders(stored), { route: "reports", jobId: "job-4", attempt: 1, queueWaitMs: 0 });
    expect(toCarrier(run.context)?.tracestate).toBe("a=1,b=2");
    endSpan(run.span, { outcome: "completed" });
    await tracing.shutdown();
    const [span] = ofTrace(traceId)(await receiver.waitForSpans((s) => ofTrace(traceId)(s).length === 1));
    expect(span).toMatchObject({ kind: OtlpSpanKind.Consumer, parentSpanId: CLIENT_SPAN_ID });
  });

  it("gives logFields for a span or a context, and a child logger writes them on every line", async () => {
    const tracing = await tracingWith({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" });
    const run = startAttemptSpan(tracing, undefined, { route: "reports", jobId: "job-2", attempt: 1, queueWaitMs: 0 });
    const { traceId, spanId } = run.span.spanContext();
    expect(logFields(run.span)).toEqual({ trace_id: traceId, span_id: spanId });
    expect(logFields(run.context)).toEqual({ trace_id: traceId, span_id: spanId });
    expect(logFields(ROOT_CONTEXT)).toEqual({});

    const { lines, sink } = createLineSink();
    const jobLog = createLogger({ destination: sink }).child({ job: "job-2", ...logFields(run.span) });
    jobLog.info("job started");
    jobLog.warn("attempt failed");
    expect(lines.map((l) => [l.msg, l.trace_id, l.span_id])).toEqual([
      ["job started", traceId, spanId],
      ["attempt failed", traceId, spanId],
    ]);
    endSpan(run.span, { outcome: "completed" });
    await tracing.shutdown();
  });

  it("leaves sampling to the SDK: OTEL_TRACES_SAMPLER=always_off records nothing but keeps the trace going", async () => {
    const tracing = await tracingWith({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_TRACES_SAMPLER: "always_off",
    });
    const traceId = TRACE_ID(2);
    const accepted = await receive("/reports/q3", { traceparent: `00-${traceId}-${CLIENT_SPAN_ID}-01` }, (req) =>
      startServerSpan(tracing, req, "POST reports"),
    );
    expect(accepted.span.isRecording()).toBe(false);
    const pairs: string[] = [];
    injectTraceHeaders(accepted.context, pairs);
    expect(pairs).toEqual(["traceparent", `00-${traceId}-${accepted.span.spanContext().spanId}-00`]);
    endSpan(accepted.span, { outcome: "accepted", status: 202 });
    // Shutdown flushes: whatever was recorded has arrived once it resolves.
    await tracing.shutdown();
    expect(receiver.spans.filter((s) => s.traceId === traceId)).toEqual([]);
  });
});

describe("a collector that refuses", () => {
  it("logs refusals through pino, and shutdown still resolves", async () => {
    const { lines, sink } = createLineSink();
    for (const name of OTEL_VARS) vi.stubEnv(name, undefined);
    // Read by the SDK's batch processor: export every 50 ms instead of 5 s.
    vi.stubEnv("OTEL_BSP_SCHEDULE_DELAY", "50");
    // Wrong path: the receiver answers 404, which the exporter does not retry.
    const env = { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.endpoint.replace("http://", "http://user:pw@")}/nowhere?key=secret` };
    const tracing = await startTracing(env, createLogger({ level: "debug", destination: sink }));
    expect(lines[0]).toMatchObject({ msg: "tracing on", endpoint: `${receiver.endpoint}/nowhere`, protocol: "http/protobuf" });

    // A periodic export fails: OpenTelemetry's diag channel reports it, as a pino error line.
    endSpan(startAttemptSpan(tracing, undefined, { route: "r", jobId: "j", attempt: 1, queueWaitMs: 0 }).span, { outcome: "completed" });
    await waitFor(() => lines.some((l) => l.level === 50 && String(l.msg).startsWith("opentelemetry: ")), { what: "a diag error line" });
    // The last export, at shutdown, fails too: a warning, never a rejection.
    endSpan(startAttemptSpan(tracing, undefined, { route: "r", jobId: "j", attempt: 2, queueWaitMs: 0 }).span, { outcome: "completed" });
    await expect(tracing.shutdown()).resolves.toBeUndefined();
    expect(lines.at(-1)).toMatchObject({ level: 40, msg: "could not export the last spans" });
    expect(JSON.stringify(lines)).not.toMatch(/secret|user:pw/);
  });
});

describe("tracing on (http/protobuf, the default)", () => {
  it("exports protobuf to /v1/traces on shutdown", async () => {
    const tracing = await tracingWith({ OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.endpoint}/` });
    const before = receiver.requests.length;
    const run = startAttemptSpan(tracing, undefined, { route: "protobuf-route", jobId: "job-3", attempt: 1, queueWaitMs: 5 });
    endSpan(run.span, { outcome: "completed" });
    await tracing.shutdown();

    const sent = receiver.requests.slice(before);
    expect(sent.map((r) => [r.path, r.contentType])).toEqual([["/v1/traces", "application/x-protobuf"]]);
    // The receiver does not decode protobuf; ids travel as raw bytes and names as UTF-8, so both show.
    const body = sent[0]?.body ?? Buffer.alloc(0);
    expect(body.includes(Buffer.from(run.span.spanContext().traceId, "hex"))).toBe(true);
    expect(body.includes(Buffer.from(run.span.spanContext().spanId, "hex"))).toBe(true);
    expect(body.includes(Buffer.from("attempt protobuf-route"))).toBe(true);
    expect(body.includes(Buffer.from("slowlane"))).toBe(true);
  });
});

describe("tracing off", () => {
  it("is off without an endpoint, when the SDK is disabled, and with OTEL_TRACES_EXPORTER=none", async () => {
    expect(await startTracing({})).toBe(DISABLED_TRACING);
    expect(await startTracing({ OTEL_SDK_DISABLED: "TRUE", OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint })).toBe(DISABLED_TRACING);
    expect(await startTracing({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint })).toBe(DISABLED_TRACING);
    expect(DISABLED_TRACING.enabled).toBe(false);
  });

  it("makes nothing and leaves the client's trace headers exactly as they came", async () => {
    const tracing = await startTracing({});
    const clientHeaders = { traceparent: `00-${TRACE_ID(3)}-${CLIENT_SPAN_ID}-01`, tracestate: "vendor=abc" };
    const accepted = await receive("/reports/q3", clientHeaders, (req) => startServerSpan(tracing, req, "POST reports"));
    expect(accepted.span.isRecording()).toBe(false);
    expect(toCarrier(accepted.context)).toBeUndefined();
    expect(logFields(accepted.span)).toEqual({});

    const run = startAttemptSpan(tracing, undefined, { route: "r", jobId: "j", attempt: 1, queueWaitMs: 0 });
    const call = startClientSpan(tracing, run.context, { method: "POST", url: `${backendUrl}/x` });
    const pairs = ["TraceParent", clientHeaders.traceparent, "tracestate", clientHeaders.tracestate, "accept", "*/*"];
    const before = [...pairs];
    injectTraceHeaders(call.context, pairs);
    expect(pairs).toEqual(before);
    const record = { ...clientHeaders };
    injectTraceHeaderRecord(call.context, record);
    expect(record).toEqual(clientHeaders);
    endSpan(call.span, { outcome: "200", status: 200 });
    endSpan(run.span, { outcome: "completed" });
    endSpan(accepted.span, { outcome: "accepted", status: 202 });
    await tracing.shutdown();
  });

  /**
   * Runs the helpers in a fresh Node process and lists the @opentelemetry packages it loaded. All of
   * them are CommonJS under Node (no `import` export condition), so `require.cache` sees every one,
   * whether imported statically or dynamically; the enabled run proves the probe sees the SDK.
   */
  async function loadedPackages(env: Record<string, string>): Promise<{ enabled: boolean; packages: string[] }> {
    const src = (file: string) => JSON.stringify(fileURLToPath(new URL(`../../src/tracing/${file}`, import.meta.url)));
    const script = `
      import { createRequire } from "node:module";
      import { pathToFileURL } from "node:url";
      const setup = await import(pathToFileURL(${src("setup.ts")}).href);
      const spans = await import(pathToFileURL(${src("spans.ts")}).href);
      const tracing = await setup.startTracing(process.env);
      const run = spans.startAttemptSpan(tracing, undefined, { route: "r", jobId: "j", attempt: 1, queueWaitMs: 0 });
      spans.injectTraceHeaders(run.context, []);
      spans.endSpan(run.span, { outcome: "completed" });
      const packages = new Set(Object.keys(createRequire(process.cwd() + "/").cache)
        .map((p) => /node_modules\\/@opentelemetry\\/([^/]+)\\//.exec(p)?.[1]).filter(Boolean));
      await tracing.shutdown();
      process.stdout.write(JSON.stringify({ enabled: tracing.enabled, packages: [...packages].sort() }));
    `;
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("OTEL_")));
    // Not spawnSync: the receiver in this process must keep answering the child's export.
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      env: { ...clean, ...env },
      timeout: 30_000,
    });
    return JSON.parse(stdout) as { enabled: boolean; packages: string[] };
  }

  it("loads no SDK module: @opentelemetry/api only (and the SDK once an endpoint is set)", async () => {
    expect(await loadedPackages({})).toEqual({ enabled: false, packages: ["api"] });
    const on = await loadedPackages({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint });
    expect(on.enabled).toBe(true);
    expect(on.packages).toEqual(expect.arrayContaining(["api", "core", "exporter-trace-otlp-proto", "resources", "sdk-trace-base"]));
  });
});
