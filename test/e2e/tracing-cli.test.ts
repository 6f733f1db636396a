/**
 * Tracing as the built CLI runs it: off without an OTEL endpoint (no SDK package loaded in the
 * process at all, the client's traceparent passed on untouched), on with one (the spans of a job
 * reach the collector, flushed on SIGTERM after everything else has stopped).
 * Needs `npm run build` first.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { waitFinal } from "../helpers/jobs.js";
import { OtlpSpanKind, createOtlpReceiver } from "../helpers/otlp-receiver.js";
import type { OtlpReceiver } from "../helpers/otlp-receiver.js";
import { spawnSlowlane, uniqueStream, waitForLog, writeConfigFile } from "../helpers/slowlane.js";
import type { ChildSlowlane } from "../helpers/slowlane.js";

const env = useNatsAndBackend();
let receiver: OtlpReceiver;
let scratch: string;
let preload: string;

/** A `--require` script that prints, at exit, the @opentelemetry packages the process loaded (all are CommonJS). */
const PRELOAD = `
process.on("exit", () => {
  const names = new Set();
  for (const path of Object.keys(require.cache)) {
    const m = /node_modules\\/@opentelemetry\\/([^/]+)\\//.exec(path);
    if (m) names.add(m[1]);
  }
  process.stderr.write("OTEL_PACKAGES " + [...names].sort().join(",") + "\\n");
});
`;

beforeAll(async () => {
  receiver = await createOtlpReceiver();
  scratch = await mkdtemp(join(tmpdir(), "slowlane-tracing-cli-"));
  preload = join(scratch, "otel-packages.cjs");
  await writeFile(preload, PRELOAD);
});

afterAll(async () => {
  await receiver?.close();
  await rm(scratch, { recursive: true, force: true });
});

function start(label: string, extraEnv: NodeJS.ProcessEnv): ChildSlowlane {
  const file = writeConfigFile({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream: uniqueStream(label) },
    routes: [{ name: "reports", methods: ["POST"], path: "/reports/**" }],
  });
  return spawnSlowlane("run", file, { NODE_OPTIONS: `--require ${preload}`, ...extraEnv });
}

/** SIGTERM, then the packages the process had loaded. */
async function stop(child: ChildSlowlane): Promise<string[]> {
  expect(await child.kill("SIGTERM")).toBe(0);
  const line = child.logs.map((l) => String(l.msg)).find((m) => m.startsWith("OTEL_PACKAGES "));
  expect(line, "the preload script's line").toBeDefined();
  return (line as string).trim().slice("OTEL_PACKAGES ".length).split(",").filter(Boolean);
}

describe("the built CLI", () => {
  it("with no OTEL endpoint: loads @opentelemetry/api only, and passes the client's traceparent on untouched", async () => {
    const child = start("off", { OTEL_EXPORTER_OTLP_ENDPOINT: "", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "" });
    const listening = await waitForLog(child.logs, "proxy listening");
    await waitForLog(child.logs, "forwarder started");
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const tag = uniqueStream("off");
    const accepted = await request(String(listening.url)).post(`/reports/${tag}`).set("traceparent", traceparent).send("x");
    expect(accepted.status).toBe(202);
    await waitFinal(String(listening.url), accepted.body.id as string);
    expect(env.backend.callsTo(`/reports/${tag}`)[0]?.headers.traceparent).toBe(traceparent);
    expect(await stop(child)).toEqual(["api"]);
  });

  it("with OTEL_EXPORTER_OTLP_ENDPOINT: the job's spans reach the collector, flushed as slowlane stops", async () => {
    const child = start("on", {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_SERVICE_NAME: "",
      // Nothing is exported before the end: what arrives, arrives with the flush at shutdown.
      OTEL_BSP_SCHEDULE_DELAY: "600000",
    });
    const listening = await waitForLog(child.logs, "proxy listening");
    await waitForLog(child.logs, "forwarder started");
    expect(child.logs.some((l) => l.msg === "tracing on")).toBe(true);
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const accepted = await request(String(listening.url)).post("/reports/on").set("traceparent", `00-${traceId}-00f067aa0ba902b7-01`).send("x");
    expect(accepted.status).toBe(202);
    await waitFinal(String(listening.url), accepted.body.id as string);

    const packages = await stop(child);
    expect(packages).toEqual(expect.arrayContaining(["api", "sdk-trace-base", "exporter-trace-otlp-http"]));
    const spans = receiver.spans.filter((s) => s.traceId === traceId);
    expect(spans.map((s) => s.kind).sort()).toEqual([OtlpSpanKind.Server, OtlpSpanKind.Client, OtlpSpanKind.Consumer].sort());
    expect(new Set(spans.map((s) => s.serviceName))).toEqual(new Set(["slowlane"]));
  });
});
