/**
 * Worker throughput. Drain: N jobs queued with no worker, then one worker started, backend latency
 * 0; slowlane's worker vs a minimal worker (pull, call, KV put, ack), both with 32 in flight.
 * Busy backend: latency 200 ms, route concurrency 16, one worker: jobs/s vs the ceiling 16 / 0.2 s.
 * Rates are taken between 10% and 90% done, leaving out process start-up and the tail.
 */
import type { BenchContext } from "../lib/context.js";
import { profileDir, slowlaneConfig, Stack } from "../lib/context.js";
import {
  connectHarness,
  createBaselineBucket,
  createBaselineConsumer,
  createBaselineStream,
  publishJobs,
  submitJobs,
  watchDrain,
} from "../lib/jobs.js";
import { median } from "../lib/load.js";
import { startBaseline, startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt, ratioRow } from "../lib/report.js";

const CONCURRENCY = 32;

export async function drain(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const { nc, jsm } = await connectHarness([nats.url]);
    stack.defer(() => nc.close());
    await createBaselineStream(jsm, "BASEDRAIN");
    await createBaselineConsumer(jsm, "BASEDRAIN", "work", CONCURRENCY);
    await createBaselineBucket(nc, "BASEDRAIN_results");
    const config = writeConfig(
      slowlaneConfig({
        upstream: backend.url as string,
        servers: [nats.url],
        routes: [{ name: "drain", methods: ["POST"], path: "/work/**", concurrency: CONCURRENCY }],
      }),
    );
    const proxy = stack.push(await startSlowlane("proxy", config));
    const n = ctx.drainJobs;
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let round = 0; round < ctx.runs; round++) {
      ctx.log(`drain round ${round + 1}/${ctx.runs}: ${n} jobs each`);
      await submitJobs(proxy.url as string, "/work/drain", n);
      const worker = await startSlowlane("worker", config, { profileDir: profileDir(ctx, `drain-worker-${round}`) });
      ours.push((await watchDrain(jsm, "BENCH", "route_drain", n)).jobsPerSec);
      await worker.stop();

      await publishJobs(nc, "BASEDRAIN", n);
      const bare = await startBaseline("worker", {
        NATS_URL: nats.url,
        STREAM: "BASEDRAIN",
        CONSUMER: "work",
        BUCKET: "BASEDRAIN_results",
        CONCURRENCY: String(CONCURRENCY),
        UPSTREAM: backend.url,
      });
      theirs.push((await watchDrain(jsm, "BASEDRAIN", "work", n)).jobsPerSec);
      await bare.stop();
    }
    return [
      ratioRow("drain, backend 0 ms, one worker, jobs/s vs minimal worker", median(ours), median(theirs), fmt.jobs, { atLeast: 0.8 },
        `${n.toLocaleString("en-US")} jobs, ${CONCURRENCY} in flight`),
    ];
  } finally {
    await stack.close();
  }
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
