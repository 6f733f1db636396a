/**
 * One request, one trace (issue 14 §1-2), through real slowlane processes' code: a traced client
 * calls a slowlane proxy, a slowlane worker (its own service name, as in a deployment of workers)
 * runs the job against a traced backend, and every span reaches a tiny OTLP/HTTP receiver
 * (http/json). Checked: the backend gets the trace in `traceparent`; accept, attempts and backend
 * calls are parented as the README says; a retried job's attempts are linked; the job's log lines
 * carry its `trace_id`; passthrough has a server and a client span; and without tracing the
 * client's `traceparent`/`tracestate` reach the backend unchanged.
 *
 * `PRINT_TRACE=1 npx vitest run test/integration/traced-jobs.test.ts` prints the retried job's
 * trace as a tree (the README shows one).
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { IncomingHttpHeaders, Server } from "node:http";
import type { AddressInfo } from "node:net";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeEnvelope, toEnvelopeHeaders } from "../../src/jobs/envelope.js";
import { createLogger } from "../../src/log.js";
import {
  endSpan,
  fromCarrier,
  injectTraceHeaderRecord,
  startClientSpan,
  startServerSpan,
  startTracing,
} from "../../src/tracing/index.js";
import type { Tracing } from "../../src/tracing/index.js";
import { waitFinal } from "../helpers/jobs.js";
import { startNatsServer } from "../helpers/nats.js";
import type { NatsServer } from "../helpers/nats.js";
import { OtlpSpanKind, OtlpStatusCode, createOtlpReceiver } from "../helpers/otlp-receiver.js";
import type { OtlpReceiver, ReceivedSpan } from "../helpers/otlp-receiver.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { LogLine, TestApp } from "../helpers/slowlane.js";
import { startTestBackend } from "../helpers/backend.js";
import type { TestBackend } from "../helpers/backend.js";

// The batch processor exports every 5 s by default: the test waits for spans, so export soon.
process.env.OTEL_BSP_SCHEDULE_DELAY = "50";

let receiver: OtlpReceiver;
let nats: NatsServer;
/** Each with its own `service.name`, as separate deployments would be. */
const tracings: Record<"client" | "proxy" | "worker" | "backend", Tracing> = {} as never;
let backend: TracedBackend;
let proxy: TestApp;
let worker: TestApp;
let stream: string;

/** A backend that is a traced service of its own and keeps the headers of each call. */
interface TracedBackend {
  readonly url: string;
  readonly calls: { url: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

/**
 * `/slow?ms=N` answers 200 after N ms; `/flaky?key=K&fails=N` answers 503 to the first N calls of
 * key K, then 200; anything else 200 at once.
 */
async function startTracedBackend(tracing: Tracing): Promise<TracedBackend> {
  const calls: TracedBackend["calls"] = [];
  const flaky = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const traced = startServerSpan(tracing, req, `${req.method ?? "GET"} ${(req.url ?? "/").split("?")[0]}`);
    calls.push({ url: req.url ?? "", headers: req.headers });
    const url = new URL(req.url ?? "/", "http://backend");
    const key = url.searchParams.get("key") ?? "";
    const seen = (flaky.get(key) ?? 0) + 1;
    flaky.set(key, seen);
    const status = url.pathname.startsWith("/flaky") && seen <= Number(url.searchParams.get("fails") ?? 0) ? 503 : 200;
    const answer = () => {
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ status }));
      endSpan(traced.span, { outcome: String(status), status });
    };
    req.resume();
    req.on("end", () => setTimeout(answer, Number(url.searchParams.get("ms") ?? 0)));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Tracing for one service, exporting http/json to the receiver. The SDK reads the service name from the environment. */
async function tracingFor(service: string): Promise<Tracing> {
  process.env.OTEL_SERVICE_NAME = service;
  try {
    return await startTracing(
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.tracesUrl, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" },
      // Silent: the four set-ups in one process would each report the global propagator taken.
      createLogger({ level: "silent" }),
    );
  } finally {
    delete process.env.OTEL_SERVICE_NAME;
  }
}

function configFor(upstream: string, streamName: string) {
  return makeConfig({
    listen: "127.0.0.1:0",
    upstream,
    nats: { servers: nats.url, stream: streamName, ackWait: "5s" },
    defaults: { timeout: "10s", attempts: 3, retryAfter: "1s", backoff: { initial: "100ms", max: "200ms", jitter: false } },
    routes: [
      { name: "reports", methods: ["POST"], path: "/reports/**" },
      { name: "flaky", methods: ["POST"], path: "/flaky", retryOn: [503] },
    ],
  });
}

beforeAll(async () => {
  receiver = await createOtlpReceiver();
  nats = await startNatsServer();
  for (const service of ["client", "proxy", "worker", "backend"] as const) {
    tracings[service] = await tracingFor(service === "client" || service === "backend" ? `test-${service}` : `slowlane-${service}`);
  }
  backend = await startTracedBackend(tracings.backend);
  stream = uniqueStream("traced");
  const config = configFor(backend.url, stream);
  proxy = await startApp(config, { role: "proxy", tracing: tracings.proxy });
  worker = await startApp(config, { role: "worker", tracing: tracings.worker });
  await Promise.all([proxy.app.ready, worker.app.ready]);
});

afterAll(async () => {
  // Each app flushes its tracing as it closes.
  await Promise.all([proxy?.close(), worker?.close()]);
  await Promise.all([tracings.client?.shutdown(), tracings.backend?.shutdown()]);
  await Promise.all([backend?.close(), nats?.close(), receiver?.close()]);
});

/** Sends a request from the traced client: its CLIENT span is the trace's root. */
async function clientCall(method: "get" | "post", path: string): Promise<{ res: request.Response; traceId: string; clientSpanId: string }> {
  const call = startClientSpan(tracings.client, fromCarrier(undefined), { method: method.toUpperCase(), url: `${proxy.url}${path}` });
  const headers: Record<string, string> = {};
  injectTraceHeaderRecord(call.context, headers);
  // A vendor's entry, as a client's tracing library may add: it travels with the trace.
  headers.tracestate = "client=1";
  let req = request(proxy.url)[method](path);
  for (const [name, value] of Object.entries(headers)) req = req.set(name, value);
  const res = await (method === "post" ? req.send({ quarter: 3 }) : req);
  endSpan(call.span, { outcome: String(res.status), status: res.status });
  const { traceId, spanId } = call.span.spanContext();
  return { res, traceId, clientSpanId: spanId };
}

const ofTrace = (traceId: string) => (spans: readonly ReceivedSpan[]) => spans.filter((s) => s.traceId === traceId);
const byKind = (spans: readonly ReceivedSpan[], kind: number, service: string) => spans.filter((s) => s.kind === kind && s.serviceName === service);
const durationMs = (s: ReceivedSpan) => Number(BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano)) / 1e6;

/** A trace as an indented tree: name, service, duration, kind, a few attributes. */
function toTree(spans: readonly ReceivedSpan[]): string {
  const kinds = ["", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"];
  const ids = new Set(spans.map((s) => s.spanId));
  const children = (parent: string | undefined) =>
    spans.filter((s) => (parent === undefined ? !ids.has(s.parentSpanId ?? "") : s.parentSpanId === parent)).sort((a, b) => (BigInt(a.startTimeUnixNano) < BigInt(b.startTimeUnixNano) ? -1 : 1));
  const lines: string[] = [];
  const walk = (span: ReceivedSpan, depth: number) => {
    const a = span.attributes;
    const notes = [
      a["slowlane.job.attempt"] !== undefined ? `attempt ${String(a["slowlane.job.attempt"])}` : "",
      a["http.response.status_code"] !== undefined ? String(a["http.response.status_code"]) : "",
      span.links.length > 0 ? `link → ${spans.find((s) => s.spanId === span.links[0]?.spanId)?.name ?? "?"} (attempt ${String(spans.find((s) => s.spanId === span.links[0]?.spanId)?.attributes["slowlane.job.attempt"] ?? "?")})` : "",
      a["slowlane.job.queue_wait_ms"] !== undefined ? `waited ${String(a["slowlane.job.queue_wait_ms"])} ms` : "",
    ].filter(Boolean);
    const label = `${"  ".repeat(depth)}${depth > 0 ? "└─ " : ""}${span.name}`;
    lines.push(`${label.padEnd(34)} ${String(span.serviceName).padEnd(16)} ${durationMs(span).toFixed(1).padStart(7)} ms  ${kinds[span.kind] ?? span.kind}${notes.length ? `  ${notes.join(", ")}` : ""}`);
    for (const child of children(span.spanId)) walk(child, depth + 1);
  };
  for (const root of children(undefined)) walk(root, 0);
  return lines.join("\n");
}

describe("an async request with a traceparent: one trace from the client to the backend", () => {
  let traceId: string;
  let clientSpanId: string;
  let jobId: string;
  let trace: readonly ReceivedSpan[];

  beforeAll(async () => {
    const sent = await clientCall("post", "/flaky?key=one-trace&fails=1&ms=20");
    expect(sent.res.status).toBe(202);
    ({ traceId, clientSpanId } = sent);
    jobId = sent.res.body.id as string;
    expect((await waitFinal(proxy.url, jobId)).status).toBe(303);
    // client 1 + accept 1 + 2 × (attempt, backend call, backend's server span).
    trace = ofTrace(traceId)(await receiver.waitForSpans((s) => ofTrace(traceId)(s).length >= 8));
    if (process.env.PRINT_TRACE === "1") console.log(`\n${toTree(trace)}\n`);
  });

  it("the backend received the same trace id, from the worker's client span", () => {
    const calls = backend.calls.filter((c) => c.url.includes("key=one-trace"));
    expect(calls).toHaveLength(2);
    const clientSpans = byKind(trace, OtlpSpanKind.Client, "slowlane-worker");
    for (const call of calls) {
      const [, callTrace, parent] = String(call.headers.traceparent).split("-");
      expect(callTrace).toBe(traceId);
      expect(clientSpans.map((s) => s.spanId)).toContain(parent);
      // The client's tracestate travels with the trace.
      expect(call.headers.tracestate).toBe("client=1");
    }
  });

  it("parents the spans: client → accept (proxy) → each attempt (worker) → backend call → backend", () => {
    const [accept, ...moreAccepts] = byKind(trace, OtlpSpanKind.Server, "slowlane-proxy");
    expect(moreAccepts).toHaveLength(0);
    expect(accept).toMatchObject({ name: "POST /flaky", parentSpanId: clientSpanId });
    expect(accept?.attributes).toMatchObject({ "http.route": "/flaky", "slowlane.route": "flaky", "slowlane.outcome": "accepted", "http.response.status_code": 202 });
    // The query string stays out of the spans (it may carry tokens).
    expect(accept?.attributes["url.path"]).toBe("/flaky");

    const attempts = byKind(trace, OtlpSpanKind.Consumer, "slowlane-worker");
    expect(attempts.map((a) => a.attributes["slowlane.job.attempt"]).sort()).toEqual([1, 2]);
    for (const attempt of attempts) {
      expect(attempt).toMatchObject({ name: "attempt flaky", parentSpanId: accept?.spanId });
      expect(attempt.attributes).toMatchObject({ "slowlane.route": "flaky", "slowlane.job.id": jobId });
      expect(typeof attempt.attributes["slowlane.job.queue_wait_ms"]).toBe("number");
      const [call, ...more] = trace.filter((s) => s.parentSpanId === attempt.spanId);
      expect(more).toHaveLength(0);
      expect(call).toMatchObject({ name: "POST", kind: OtlpSpanKind.Client, serviceName: "slowlane-worker" });
      expect(call?.attributes["url.full"]).toBe(`${backend.url}/flaky`);
      const served = trace.filter((s) => s.parentSpanId === call?.spanId);
      expect(served.map((s) => s.serviceName)).toEqual(["test-backend"]);
    }
    const first = attempts.find((a) => a.attributes["slowlane.job.attempt"] === 1);
    expect(first?.status.code, "the 503 fails the first attempt").toBe(OtlpStatusCode.Error);
    expect(first?.attributes["slowlane.outcome"]).toBe("503");
  });

  it("links the retried attempt to the one before", () => {
    const attempts = byKind(trace, OtlpSpanKind.Consumer, "slowlane-worker");
    const first = attempts.find((a) => a.attributes["slowlane.job.attempt"] === 1);
    const second = attempts.find((a) => a.attributes["slowlane.job.attempt"] === 2);
    expect(first?.links).toEqual([]);
    expect(second?.links.map((l) => [l.traceId, l.spanId])).toEqual([[traceId, first?.spanId]]);
  });

  it("puts the trace on every log line of the job: the accept's on the proxy's, each attempt's on the worker's", () => {
    const accept = byKind(trace, OtlpSpanKind.Server, "slowlane-proxy")[0];
    const jobLines = (logs: readonly LogLine[]) => logs.filter((l) => l.job === jobId);
    const proxyLines = jobLines(proxy.logs);
    expect(proxyLines.map((l) => l.msg)).toContain("job accepted");
    for (const line of proxyLines) expect(line).toMatchObject({ trace_id: traceId, span_id: accept?.spanId });

    const workerLines = jobLines(worker.logs);
    expect(workerLines.map((l) => l.msg)).toEqual(expect.arrayContaining(["job started", "attempt failed", "job completed"]));
    const attemptIds = byKind(trace, OtlpSpanKind.Consumer, "slowlane-worker").map((s) => s.spanId);
    for (const line of workerLines) {
      expect(line.trace_id).toBe(traceId);
      expect(attemptIds).toContain(line.span_id);
    }
  });
});

describe("a passthrough request", () => {
  it("gets a server span and a client span, whose context the backend receives", async () => {
    const sent = await clientCall("get", "/items/42?token=secret");
    expect(sent.res.status).toBe(200);
    const spans = ofTrace(sent.traceId)(await receiver.waitForSpans((s) => ofTrace(sent.traceId)(s).length >= 4));
    const [server] = byKind(spans, OtlpSpanKind.Server, "slowlane-proxy");
    const [client] = byKind(spans, OtlpSpanKind.Client, "slowlane-proxy");
    expect(server).toMatchObject({ name: "GET", parentSpanId: sent.clientSpanId });
    expect(server?.attributes).toMatchObject({ "url.path": "/items/42", "http.response.status_code": 200 });
    expect(client).toMatchObject({ name: "GET", parentSpanId: server?.spanId });
    expect(client?.attributes["url.full"]).toBe(`${backend.url}/items/42`);
    const call = backend.calls.find((c) => c.url === "/items/42?token=secret");
    expect(String(call?.headers.traceparent).split("-").slice(1, 3)).toEqual([sent.traceId, client?.spanId]);
    expect(JSON.stringify(spans)).not.toContain("secret");
  });
});

describe("a trace the sampler leaves out", () => {
  it("is still passed on, flagged not sampled, and still joins the logs; nothing of it is exported", async () => {
    process.env.OTEL_TRACES_SAMPLER = "always_off";
    const unsampled = await tracingFor("slowlane-unsampled").finally(() => delete process.env.OTEL_TRACES_SAMPLER);
    const app = await startApp(configFor(backend.url, stream), { role: "proxy", tracing: unsampled });
    const traceId = "5bf92f3577b34da6a3ce929d0e0e4737";
    try {
      await app.app.ready;
      const traceparent = `00-${traceId}-00f067aa0ba902b7-01`;
      expect((await request(app.url).get("/items/unsampled").set("traceparent", traceparent)).status).toBe(200);
      const accepted = await request(app.url).post("/reports/unsampled").set("traceparent", traceparent).send("x");
      expect(accepted.status).toBe(202);
      await waitFinal(app.url, accepted.body.id as string);
      for (const path of ["/items/unsampled", "/reports/unsampled"]) {
        const [, callTrace, parent, flags] = String(backend.calls.find((c) => c.url === path)?.headers.traceparent).split("-");
        expect([callTrace, flags], path).toEqual([traceId, "00"]);
        expect(parent).not.toBe("00f067aa0ba902b7");
      }
      expect(app.logs.find((l) => l.msg === "job accepted")?.trace_id).toBe(traceId);
    } finally {
      // Flushes what the proxy's tracing holds: nothing of this trace.
      await app.close();
    }
    expect(receiver.spans.filter((s) => s.traceId === traceId && s.serviceName === "slowlane-unsampled")).toEqual([]);
    // The worker's attempt followed the client's "not sampled" (parent-based): the backend got flags 00 above.
  });
});

describe("a job accepted by a proxy without tracing, worked by a traced worker", () => {
  it("continues the client's own traceparent from the stored headers", async () => {
    const untraced = await startApp(configFor(backend.url, stream), "proxy");
    try {
      await untraced.app.ready;
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      const res = await request(untraced.url).post("/reports/q4").set("traceparent", `00-${traceId}-00f067aa0ba902b7-01`).send("x");
      expect(res.status).toBe(202);
      await waitFinal(untraced.url, res.body.id as string);
      const spans = ofTrace(traceId)(await receiver.waitForSpans((s) => ofTrace(traceId)(s).length >= 3));
      const [attempt] = byKind(spans, OtlpSpanKind.Consumer, "slowlane-worker");
      expect(attempt?.parentSpanId).toBe("00f067aa0ba902b7");
      expect(byKind(spans, OtlpSpanKind.Server, "slowlane-proxy")).toHaveLength(0);
    } finally {
      await untraced.close();
    }
  });
});

describe("without tracing", () => {
  let plainBackend: TestBackend;
  let plain: TestApp;
  const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

  beforeAll(async () => {
    plainBackend = await startTestBackend();
    plain = await startApp(configFor(plainBackend.url, uniqueStream("untraced")));
    await plain.app.ready;
  });
  afterAll(async () => {
    await plain?.close();
    await plainBackend?.close();
  });

  it("hands the client's traceparent and tracestate to the backend unchanged, on passthrough and on async routes", async () => {
    const passed = await request(plain.url).get("/plain?tag=untraced").set("traceparent", traceparent).set("tracestate", tracestate);
    expect(passed.status).toBe(200);
    const accepted = await request(plain.url).post("/reports/untraced").set("traceparent", traceparent).set("tracestate", tracestate).send("x");
    expect(accepted.status).toBe(202);
    await waitFinal(plain.url, accepted.body.id as string);
    for (const path of ["/plain?tag=untraced", "/reports/untraced"]) {
      const [call] = plainBackend.callsTo(path);
      expect(call?.headers).toMatchObject({ traceparent, tracestate });
    }
    // And no trace fields are added to its log lines.
    expect(plain.logs.some((l) => "trace_id" in l)).toBe(false);
  });
});

describe("the job envelope's trace carrier", () => {
  const job = { id: "j1", route: "reports", method: "POST", url: "/r", headers: [], createdAt: 1 };

  it("travels with the job", () => {
    const trace = { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "a=b" };
    expect(decodeEnvelope(toEnvelopeHeaders({ ...job, trace }))).toEqual({ ...job, trace });
  });

  it("is dropped, silently, when it is not one: the job is still read", () => {
    const headers = toEnvelopeHeaders(job);
    const raw = JSON.parse(headers.get("Slowlane-Request")) as Record<string, unknown>;
    headers.set("Slowlane-Request", JSON.stringify({ ...raw, trace: { traceparent: 42 } }));
    expect(decodeEnvelope(headers)).toEqual(job);
  });
});
