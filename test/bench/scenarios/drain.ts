/**
 * Worker throughput. Drain (`lib/drain.ts`): N jobs queued with no worker, then one worker started,
 * backend latency 0; slowlane's worker vs a minimal worker (pull, call, KV put, ack), both with 32
 * in flight, rates and CPU time per job between 10% and 90% done.
 * Busy backend: latency 200 ms, route concurrency 16, one worker: jobs/s vs the ceiling 16 / 0.2 s.
 */
import type { BenchContext } from "../lib/context.js";
import { slowlaneConfig, Stack } from "../lib/context.js";
import { compareDrain, drainRows } from "../lib/drain.js";
import { connectHarness, submitJobs, watchDrain } from "../lib/jobs.js";
import { median } from "../lib/load.js";
import { startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt, ratioRow } from "../lib/report.js";

const CONCURRENCY = 32;

export async function drain(ctx: BenchContext): Promise<Row[]> {
  const result = await compareDrain(ctx, { workers: 1, concurrency: CONCURRENCY, jobs: ctx.drainJobs, profileName: "drain-worker" });
  return drainRows("drain, backend 0 ms, one worker", "drain-1", result, { workers: 1, concurrency: CONCURRENCY });
}

export async function busy(ctx: BenchContext): Promise<Row[]> {
  const concurrency = 16;
  const latencyMs = 200;
  const ceiling = concurrency / (latencyMs / 1000);
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const { nc, jsm } = await connectHarness([nats.url]);
    stack.defer(() => nc.close());
    const config = writeConfig(
      slowlaneConfig({
        upstream: backend.url as string,
        servers: [nats.url],
        routes: [{ name: "busy", methods: ["POST"], path: "/work/**", concurrency }],
      }),
    );
    const proxy = stack.push(await startSlowlane("proxy", config));
    // Enough for about BENCH_DURATION * 1.5 seconds of work at the ceiling.
    const n = Math.max(concurrency * 10, Math.round(ceiling * ctx.durationS * 1.5));
    const rates: number[] = [];
    for (let round = 0; round < ctx.runs; round++) {
      ctx.log(`busy backend round ${round + 1}/${ctx.runs}: ${n} jobs of ${latencyMs} ms`);
      await submitJobs(proxy.url as string, `/work/busy?ms=${latencyMs}`, n);
      const worker = await startSlowlane("worker", config);
      rates.push((await watchDrain(jsm, "BENCH", "route_busy", n)).jobsPerSec);
      await worker.stop();
    }
    return [
      ratioRow(`backend kept busy (${latencyMs} ms, concurrency ${concurrency}), jobs/s vs ${concurrency} / ${latencyMs / 1000} s`,
        median(rates), ceiling, fmt.jobs, { atLeast: 0.95 }, `${n} jobs, one worker`),
    ];
  } finally {
    await stack.close();
  }
}
