/**
 * Drain measurements: N jobs queued with no worker, then `workers` worker processes started, backend
 * latency 0; slowlane's workers against as many minimal workers (pull, call, KV put, ack), both with
 * the same number of jobs in flight (the consumer's MaxAckPending, shared by all the workers).
 *
 * The rate and the CPU time per job are taken from the moment every worker of the round is ready
 * (the first may have drained some jobs meanwhile), between 10% and 90% of what was left then:
 * process start-up and the tail are left out. CPU time per job is kept for the workers, the
 * nats-server and the backend, so a figure that moved with the machine's load can be told from
 * one that moved with the code.
 */
import { cpus } from "node:os";
import type { BenchContext } from "./context.js";
import { profileDir, slowlaneConfig, Stack } from "./context.js";
import {
  connectHarness,
  createBaselineBucket,
  createBaselineConsumer,
  createBaselineStream,
  publishJobs,
  remaining,
  submitJobs,
  watchDrain,
} from "./jobs.js";
import type { DrainResult } from "./jobs.js";
import { median } from "./load.js";
import { startBaseline, startSlowlane, writeConfig } from "./procs.js";
import type { Proc } from "./procs.js";
import type { Row } from "./report.js";
import { fmt, ratioRow } from "./report.js";

export interface DrainSide {
  /** Jobs per second (median of the rounds). */
  jobsPerSec: number;
  /** CPU ms per job, summed over the workers (median of the rounds). */
  workerCpuMs: number;
  /** CPU ms per job of the nats-server. */
  natsCpuMs: number;
  /** CPU ms per job of the backend. */
  backendCpuMs: number;
  /** Smallest share of the queue still left when every worker was ready, over the rounds. */
  measuredShare: number;
}

export interface DrainComparison {
  slowlane: DrainSide;
  minimal: DrainSide;
  jobs: number;
}

interface Round extends DrainResult {
  share: number;
}

function summarise(rounds: Round[]): DrainSide {
  const cpu = (name: string) => median(rounds.map((r) => r.cpuMsPerJob[name] ?? Number.NaN));
  return {
    jobsPerSec: median(rounds.map((r) => r.jobsPerSec)),
    workerCpuMs: cpu("workers"),
    natsCpuMs: cpu("nats"),
    backendCpuMs: cpu("backend"),
    measuredShare: Math.min(...rounds.map((r) => r.share)),
  };
}

/**
 * Drains `jobs` jobs `ctx.runs` times with slowlane's workers and with the minimal ones, the order
 * alternating from round to round so drift on a shared machine hits both alike.
 */
export async function compareDrain(
  ctx: BenchContext,
  opts: { workers: number; concurrency: number; jobs: number; profileName: string },
): Promise<DrainComparison> {
  const { workers, concurrency, jobs: n } = opts;
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const { nc, jsm } = await connectHarness([nats.url]);
    stack.defer(() => nc.close());
    await createBaselineStream(jsm, "BASEDRAIN");
    await createBaselineConsumer(jsm, "BASEDRAIN", "work", concurrency);
    await createBaselineBucket(nc, "BASEDRAIN_results");
    const config = writeConfig(
      slowlaneConfig({
        upstream: backend.url as string,
        servers: [nats.url],
        routes: [{ name: "drain", methods: ["POST"], path: "/work/**", concurrency }],
      }),
    );
    const proxy = stack.push(await startSlowlane("proxy", config));
    const cpuOf = (procs: readonly Proc[]) => ({ workers: procs.map((p) => p.pid), nats: [nats.pid as number], backend: [backend.pid] });
    const measure = async (stream: string, consumer: string, start: () => Promise<Proc[]>): Promise<Round> => {
      const procs = await start();
      try {
        const left = await remaining(jsm, stream, consumer);
        return { ...(await watchDrain(jsm, stream, consumer, left, { cpuOf: cpuOf(procs) })), share: left / n };
      } finally {
        await Promise.all(procs.map((p) => p.stop()));
      }
    };
    const ours = async (round: number): Promise<Round> => {
      await submitJobs(proxy.url as string, "/work/drain", n);
      return measure("BENCH", "route_drain", () =>
        Promise.all(
          Array.from({ length: workers }, (_, i) =>
            startSlowlane("worker", config, { profileDir: profileDir(ctx, `${opts.profileName}-${round}-${i}`) }),
          ),
        ),
      );
    };
    const theirs = async (round: number): Promise<Round> => {
      await publishJobs(nc, "BASEDRAIN", n);
      const env = { NATS_URL: nats.url, STREAM: "BASEDRAIN", CONSUMER: "work", BUCKET: "BASEDRAIN_results", CONCURRENCY: String(concurrency), UPSTREAM: backend.url };
      // The minimal workers are profiled too, to compare the profiles function by function.
      const start = (i: number) => startBaseline("worker", env, profileDir(ctx, `${opts.profileName}-minimal-${round}-${i}`));
      return measure("BASEDRAIN", "work", () => Promise.all(Array.from({ length: workers }, (_, i) => start(i))));
    };
    const a: Round[] = [];
    const b: Round[] = [];
    for (let round = 0; round < ctx.runs; round++) {
      ctx.log(`drain, ${workers} worker(s), round ${round + 1}/${ctx.runs}: ${n} jobs each`);
      if (round % 2 === 0) {
        a.push(await ours(round));
        b.push(await theirs(round));
      } else {
        b.push(await theirs(round));
        a.push(await ours(round));
      }
    }
    return { slowlane: summarise(a), minimal: summarise(b), jobs: n };
  } finally {
    await stack.close();
  }
}

const cpuMs = (n: number) => `${n.toFixed(3)} ms`;

/**
 * The rows of a drain comparison: the rate against the target, then the CPU time per job (reported:
 * on a shared machine it is the figure to trust), with jobs/s per core when `perCore`.
 */
export function drainRows(label: string, key: string, result: DrainComparison, opts: { workers: number; concurrency: number; perCore?: boolean }): Row[] {
  const { slowlane: ours, minimal: theirs } = result;
  const cores = cpus().length;
  const share = Math.min(ours.measuredShare, theirs.measuredShare);
  const late = share < 0.5 ? `; only ${(share * 100).toFixed(0)}% of the queue left once every worker was up` : "";
  const perCpuSecond = (ms: number) => fmt.jobs(1000 / ms);
  return [
    {
      ...ratioRow(`${label}, jobs/s vs ${opts.workers === 1 ? "minimal worker" : `${opts.workers} minimal workers`}`, ours.jobsPerSec, theirs.jobsPerSec, fmt.jobs, { atLeast: 0.8 },
        `${result.jobs.toLocaleString("en-US")} jobs, ${opts.concurrency} in flight${late}`),
      key,
    },
    ...(opts.perCore
      ? [
          {
            scenario: `${label}, jobs/s per core (${cores} cores)`,
            slowlane: fmt.jobs(ours.jobsPerSec / cores),
            baseline: fmt.jobs(theirs.jobsPerSec / cores),
            ratio: ours.jobsPerSec / theirs.jobsPerSec,
            target: "report",
          },
        ]
      : []),
    {
      scenario: `${label}, worker CPU per job vs minimal`,
      slowlane: cpuMs(ours.workerCpuMs),
      baseline: cpuMs(theirs.workerCpuMs),
      ratio: ours.workerCpuMs / theirs.workerCpuMs,
      target: "report",
      note:
        `${perCpuSecond(ours.workerCpuMs)} vs ${perCpuSecond(theirs.workerCpuMs)} per worker CPU second; ` +
        `nats-server ${cpuMs(ours.natsCpuMs)} vs ${cpuMs(theirs.natsCpuMs)}, backend ${cpuMs(ours.backendCpuMs)} vs ${cpuMs(theirs.backendCpuMs)} per job`,
    },
  ];
}
