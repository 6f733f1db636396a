/**
 * Tracing's cost on the two hot paths: passthrough (GET) and accept (POST, 202), each against its bare
 * baseline as in the passthrough and accept scenarios, with slowlane's proxy started three ways:
 *
 *   off          no OTEL_* endpoint: no SDK loaded (the default; its ratios must match those scenarios)
 *   sampled      OTLP/HTTP (protobuf) to a sink that keeps nothing; every request a new sampled trace
 *   not sampled  the same with OTEL_TRACES_SAMPLER=always_off: spans made, none recorded or exported
 *
 * The client sends no traceparent, so each request starts a trace (the sampler decides at the root).
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { toJetStreamNames } from "../../../src/nats/names.js";
import type { BenchContext } from "../lib/context.js";
import { profileDir, slowlaneConfig, Stack } from "../lib/context.js";
import { BODY_1K, createBaselineStream } from "../lib/jobs.js";
import { cannon, compare, med } from "../lib/load.js";
import type { Comparison } from "../lib/load.js";
import { startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt, ratioRow } from "../lib/report.js";

interface Mode {
  readonly name: string;
  readonly env: (sinkUrl: string) => NodeJS.ProcessEnv;
}

const MODES: readonly Mode[] = [
  { name: "tracing off", env: () => ({}) },
  {
    name: "tracing on, sampled",
    env: (sink) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: sink, OTEL_TRACES_SAMPLER: "parentbased_always_on" }),
  },
  {
    name: "tracing on, not sampled",
    env: (sink) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: sink, OTEL_TRACES_SAMPLER: "always_off" }),
  },
];

/**
 * A mode's row: held to the scenario's own target with tracing off (`atLeast`), only reported with it on,
 * with its ratio relative to tracing off's in the note.
 */
function toRow(scenario: string, c: Comparison, atLeast: number | undefined, off: Comparison | undefined): Row {
  const bad = med.bad(c.a) + med.bad(c.b);
  // Ratio over ratio: each against its own baseline run, so drift on a shared machine cancels out.
  const ratio = (x: Comparison) => med.rps(x.a) / med.rps(x.b);
  const relative = off === c || off === undefined ? undefined : `${(ratio(c) / ratio(off)).toFixed(2)} × tracing off's ratio`;
  const note = [relative, bad ? `${bad} bad answers` : undefined].filter(Boolean).join("; ") || undefined;
  if (atLeast !== undefined) return ratioRow(scenario, med.rps(c.a), med.rps(c.b), fmt.rps, { atLeast }, note);
  return { scenario, slowlane: fmt.rps(med.rps(c.a)), baseline: fmt.rps(med.rps(c.b)), ratio: med.rps(c.a) / med.rps(c.b), target: "report", note };
}

export async function tracing(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const nc = await connect({ servers: nats.url });
    stack.defer(() => nc.close());
    const jsm = await jetstreamManager(nc);
    await createBaselineStream(jsm, "BASETRC");
    const backend = await stack.baseline("backend");
    const bareProxy = await stack.baseline("proxy", { UPSTREAM: backend.url });
    const bareAccept = await stack.baseline("accept", { NATS_URL: nats.url, STREAM: "BASETRC" });
    const sink = await stack.baseline("otlp-sink");

    const get = (url: string) => (d?: number) => cannon({ url: `${url}/items/42`, durationS: d ?? ctx.durationS });
    const post = (url: string) => (d?: number) =>
      cannon({ url: `${url}/work/report`, durationS: d ?? ctx.durationS, method: "POST", body: BODY_1K, headers: { "content-type": "application/json" }, expectStatus: 202 });

    const rows: Row[] = [];
    const off: { passthrough?: Comparison; accept?: Comparison } = {};
    for (const [i, mode] of MODES.entries()) {
      const stream = `BTRC${i}`;
      const config = writeConfig(
        slowlaneConfig({ upstream: backend.url as string, servers: [nats.url], stream, routes: [{ name: "work", methods: ["POST"], path: "/work/**" }] }),
      );
      const proxy = await startSlowlane("proxy", config, { profileDir: profileDir(ctx, `tracing-${i}`), env: mode.env(sink.url as string) });
      try {
        ctx.log(`tracing: passthrough, ${mode.name}`);
        const passthrough = await compare(ctx.runs, ctx.warmupS, get(proxy.url as string), get(bareProxy.url as string));
        ctx.log(`tracing: accept, ${mode.name}`);
        const accept = await compare(ctx.runs, ctx.warmupS, post(proxy.url as string), post(bareAccept.url as string));
        if (i === 0) Object.assign(off, { passthrough, accept });
        rows.push(
          toRow(`passthrough req/s vs bare http-proxy-3, ${mode.name}`, passthrough, i === 0 ? 0.95 : undefined, off.passthrough),
          toRow(`async accept (202) req/s vs minimal accept server, ${mode.name}`, accept, i === 0 ? 0.8 : undefined, off.accept),
        );
      } finally {
        await proxy.stop();
        // Each accept run queues about a million jobs: drop them before the next mode.
        await Promise.all([jsm.streams.purge(toJetStreamNames(stream).stream), jsm.streams.purge("BASETRC")]);
      }
    }
    await sink.stop();
    const exported = sink.lines.find((l) => l.startsWith("EXPORTS "))?.split(" ");
    // Only the sampled runs export: the count is theirs (passthrough and accept together).
    const sampled = rows[2];
    if (exported && sampled) {
      sampled.note = [sampled.note, `sampled runs exported ${fmt.mib(Number(exported[2]))} in ${exported[1]} requests`].filter(Boolean).join("; ");
    }
    return rows;
  } finally {
    await stack.close();
  }
}
