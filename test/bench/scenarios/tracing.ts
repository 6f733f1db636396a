/**
 * Tracing's cost on the two hot paths: passthrough (GET) and accept (POST, 202), each against its bare
 * baseline as in the passthrough and accept scenarios, with slowlane's proxy started three ways:
 *
 *   off          no OTEL_* endpoint: no SDK loaded (the default; held to those scenarios' targets)
 *   sampled      OTLP/HTTP (protobuf) to a sink that keeps nothing; every request a new sampled trace
 *   not sampled  the same with OTEL_TRACES_SAMPLER=always_off: spans made, none recorded or exported
 *
 * The client sends no traceparent, so each request starts a trace (the sampler decides at the root).
 * Besides req/s, the proxy process's CPU time per request is reported per mode: on a machine shared
 * with other work it is the steadier figure.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { toJetStreamNames } from "../../../src/nats/names.js";
import type { BenchContext } from "../lib/context.js";
import { profileDir, slowlaneConfig, Stack } from "../lib/context.js";
import { BODY_1K, createBaselineStream } from "../lib/jobs.js";
import { cannon, compare, med, median } from "../lib/load.js";
import type { CannonOptions, Comparison, LoadResult } from "../lib/load.js";
import { cpuTimeMs, startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt, ratioRow } from "../lib/report.js";

interface Mode {
  readonly name: string;
  readonly env: (sinkUrl: string) => NodeJS.ProcessEnv;
}

const MODES: readonly Mode[] = [
  { name: "tracing off", env: () => ({}) },
  { name: "tracing on, sampled", env: (sink) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: sink, OTEL_TRACES_SAMPLER: "parentbased_always_on" }) },
  { name: "tracing on, not sampled", env: (sink) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: sink, OTEL_TRACES_SAMPLER: "always_off" }) },
];

/** One mode's figures: the comparisons with the baselines, and slowlane's CPU µs per request. */
interface Measured {
  passthrough: Comparison;
  accept: Comparison;
  cpu: { passthrough: number; accept: number };
}

/** A load run that also adds the CPU µs per request of process `pid` to `cpuUs` (measured runs only). */
function measured(opts: Omit<CannonOptions, "durationS">, durationS: number, pid: number | undefined, cpuUs: number[]) {
  return async (d?: number): Promise<LoadResult> => {
    const before = pid === undefined ? 0 : cpuTimeMs(pid);
    const result = await cannon({ ...opts, durationS: d ?? durationS });
    if (pid !== undefined && d === undefined) cpuUs.push(((cpuTimeMs(pid) - before) * 1000) / result.total);
    return result;
  };
}

const ratioOf = (c: Comparison) => med.rps(c.a) / med.rps(c.b);
const us = (n: number) => `${n.toFixed(0)} µs`;

/** A req/s row: held to the scenario's target with tracing off, reported with it on (ratio against off's in the note). */
function rpsRow(scenario: string, c: Comparison, atLeast: number | undefined, off: Comparison | undefined): Row {
  const bad = med.bad(c.a) + med.bad(c.b);
  // Ratio over ratio: each against its own baseline run, so drift on a shared machine cancels out.
  const relative = atLeast === undefined && off !== undefined ? `${(ratioOf(c) / ratioOf(off)).toFixed(2)} × tracing off's ratio` : undefined;
  const note = [relative, bad ? `${bad} bad answers` : undefined].filter(Boolean).join("; ") || undefined;
  if (atLeast !== undefined) return ratioRow(scenario, med.rps(c.a), med.rps(c.b), fmt.rps, { atLeast }, note);
  return { scenario, slowlane: fmt.rps(med.rps(c.a)), baseline: fmt.rps(med.rps(c.b)), ratio: ratioOf(c), target: "report", note };
}

function cpuRow(path: "passthrough" | "accept", mode: Mode, now: Measured, off: Measured): Row {
  const scenario = `${path} CPU per request, ${mode.name} vs tracing off`;
  const [a, b] = [now.cpu[path], off.cpu[path]];
  return { scenario, slowlane: us(a), baseline: us(b), ratio: a / b, target: "report", note: `+${us(a - b)} per request; proxy process user + system time` };
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
    const bareProxy = await stack.baseline("undici-proxy", { UPSTREAM: backend.url });
    const bareAccept = await stack.baseline("accept", { NATS_URL: nats.url, STREAM: "BASETRC" });
    const sink = await stack.baseline("otlp-sink");
    const get = (url: string): Omit<CannonOptions, "durationS"> => ({ url: `${url}/items/42` });
    const post = (url: string): Omit<CannonOptions, "durationS"> => ({
      url: `${url}/work/report`,
      method: "POST",
      body: BODY_1K,
      headers: { "content-type": "application/json" },
      expectStatus: 202,
    });

    const results: Measured[] = [];
    for (const [i, mode] of MODES.entries()) {
      const stream = `BTRC${i}`;
      const config = writeConfig(
        slowlaneConfig({ upstream: backend.url as string, servers: [nats.url], stream, routes: [{ name: "work", methods: ["POST"], path: "/work/**" }] }),
      );
      const proxy = await startSlowlane("proxy", config, { profileDir: profileDir(ctx, `tracing-${i}`), env: mode.env(sink.url as string) });
      const cpu = { passthrough: [] as number[], accept: [] as number[] };
      try {
        ctx.log(`tracing: passthrough, ${mode.name}`);
        const run = (opts: Omit<CannonOptions, "durationS">, pid?: number, into: number[] = []) => measured(opts, ctx.durationS, pid, into);
        const passthrough = await compare(ctx.runs, ctx.warmupS, run(get(proxy.url as string), proxy.pid, cpu.passthrough), run(get(bareProxy.url as string)));
        ctx.log(`tracing: accept, ${mode.name}`);
        const accept = await compare(ctx.runs, ctx.warmupS, run(post(proxy.url as string), proxy.pid, cpu.accept), run(post(bareAccept.url as string)));
        results.push({ passthrough, accept, cpu: { passthrough: median(cpu.passthrough), accept: median(cpu.accept) } });
      } finally {
        await proxy.stop();
        // Each accept run queues about a million jobs: drop them before the next mode.
        await Promise.all([jsm.streams.purge(toJetStreamNames(stream).stream), jsm.streams.purge("BASETRC")]);
      }
    }
    await sink.stop();
    return toRows(results, sink.lines.find((l) => l.startsWith("EXPORTS "))?.split(" "));
  } finally {
    await stack.close();
  }
}

function toRows(results: Measured[], exported: string[] | undefined): Row[] {
  const off = results[0] as Measured;
  const rows: Row[] = [];
  for (const [i, mode] of MODES.entries()) {
    const now = results[i] as Measured;
    rows.push(
      rpsRow(`passthrough req/s vs bare undici Pool proxy, ${mode.name}`, now.passthrough, i === 0 ? 0.9 : undefined, off.passthrough),
      rpsRow(`async accept (202) req/s vs minimal accept server, ${mode.name}`, now.accept, i === 0 ? 0.8 : undefined, off.accept),
    );
  }
  for (const mode of MODES.slice(1)) {
    const now = results[MODES.indexOf(mode)] as Measured;
    rows.push(cpuRow("passthrough", mode, now, off), cpuRow("accept", mode, now, off));
  }
  // Only the sampled runs export: the count is theirs (passthrough and accept together).
  const sampled = rows[2];
  if (exported && sampled) {
    sampled.note = [sampled.note, `sampled runs exported ${fmt.mib(Number(exported[2]))} in ${exported[1]} requests`].filter(Boolean).join("; ");
  }
  return rows;
}
