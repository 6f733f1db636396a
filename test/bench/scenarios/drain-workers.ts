/**
 * Drain with four workers on the machine's cores (two on the reference machine): four slowlane
 * worker processes vs four minimal workers, backend latency 0, 64 jobs in flight shared by the
 * four (the consumer's MaxAckPending). Reports jobs/s per core besides the ratio: with more
 * workers than cores, the workers compete with each other and with nats-server for CPU, so what
 * each job costs decides the rate.
 */
import type { BenchContext } from "../lib/context.js";
import { compareDrain, drainRows } from "../lib/drain.js";
import type { Row } from "../lib/report.js";

const WORKERS = 4;
const CONCURRENCY = 64;

export async function drainWorkers(ctx: BenchContext): Promise<Row[]> {
  // Twice the jobs of the one-worker drain: four processes take a while to start on two cores.
  const result = await compareDrain(ctx, { workers: WORKERS, concurrency: CONCURRENCY, jobs: ctx.drainJobs * 2, profileName: "drain4-worker" });
  return drainRows(`drain, backend 0 ms, ${WORKERS} workers`, "drain-4", result, { workers: WORKERS, concurrency: CONCURRENCY, perCore: true });
}
