/**
 * A Jepsen-style fault run against real processes: a private nats-server, a slowlane proxy, N
 * workers and a backend with varied latencies. A client submits jobs while a nemesis SIGKILLs
 * workers and the proxy, restarts nats-server (SIGTERM and SIGKILL) and kills the backend for a
 * few seconds (longer than the route's attempts would last without the circuit); then everything is
 * healed and every accepted job is checked through its status URL, like Jepsen's queue checker:
 *
 *   lost        a 202 that never became final (or answered 404/410): must be 0
 *   failed      final with an error: 0 expected with attempts: 100
 *   duplicates  backend calls beyond the first for one accepted job: at-least-once, reported only
 *
 * Used by `fault-injection.test.ts` (CI size) and `soak.ts` (bigger, parameters from the environment).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { waitFor } from "../helpers/wait.js";
import { checkJobs, Outcome } from "./checker.js";
import type { Verdict } from "./checker.js";
import { startFaultBackend } from "./fault-backend.js";
import type { FaultBackend } from "./fault-backend.js";
import { startFaultCluster } from "./fault-cluster.js";
import type { ClusterProcess, FaultCluster } from "./fault-cluster.js";
import { Fault, noFaults, planFaults, runNemesis } from "./nemesis.js";
import type { FaultCounts, FaultEvent } from "./nemesis.js";
import { startJszSampler } from "./jsz-sampler.js";
import { createProxyClient } from "./proxy-client.js";
import type { ProxyClient } from "./proxy-client.js";
import { createRandom, newSeed } from "./random.js";
import { startStatusReader } from "./status-reader.js";
import type { StatusAnomaly } from "./status-reader.js";
import { startSubmitter } from "./submitter.js";
import type { Accepted, SubmitReport } from "./submitter.js";

export interface FaultRunOptions {
  /** Jobs to submit (one token each). */
  jobs: number;
  /** Worker processes kept running (a killed one is replaced). */
  workers: number;
  /** The route's concurrency across all workers. */
  concurrency: number;
  /** Submissions in flight at once. */
  clientConcurrency: number;
  /** Accepted jobs not yet answered by the backend, at most, before the client submits more. */
  maxBacklog: number;
  /** Faults to apply, spread evenly over the submissions, in a random order. */
  faults: FaultCounts;
  /** How long the backend stays down when the nemesis kills it, in ms. */
  backendOutageMs: number;
  /** Share of backend calls that take 0.5-2 s instead of 0-300 ms. */
  slowShare: number;
  /** Seeds the order of faults, the victims, the latencies and the tokens. */
  seed: number;
  /** How long the client keeps trying to get its jobs accepted, in ms. */
  submitTimeoutMs: number;
  /** How long after healing the checker waits for every job to be final, in ms. */
  checkTimeoutMs: number;
  /** Progress lines while running (faults applied, phases). */
  note?: (line: string) => void;
  /** When set, every process's log, nats-server's output and the fault timeline are written there. */
  logDir?: string;
}

export const CI_FAULT_RUN: Omit<FaultRunOptions, "seed"> = {
  jobs: 2_000,
  workers: 2,
  concurrency: 16,
  clientConcurrency: 8,
  maxBacklog: 200,
  faults: { [Fault.WorkerKill]: 4, [Fault.ProxyKill]: 2, [Fault.NatsTerm]: 1, [Fault.NatsKill]: 1, [Fault.BackendKill]: 1 },
  backendOutageMs: 4_000,
  slowShare: 0.05,
  submitTimeoutMs: 70_000,
  checkTimeoutMs: 60_000,
};

export interface FaultReport {
  seed: number;
  accepted: number;
  completed: number;
  failed: number;
  lost: number;
  mismatched: number;
  /** Backend calls beyond the first, over every accepted job. */
  duplicates: number;
  /** Accepted jobs the backend saw more than once. */
  duplicatedJobs: number;
  /** Submissions that got no 202 (retried under a new try). */
  notAccepted: number;
  /** Of those, the ones the backend was called for anyway (persisted, then the 202 was lost). */
  unacknowledgedRuns: number;
  /** Tokens never accepted before the submit deadline. */
  givenUp: number;
  /** Status reads made while the faults happened. */
  statusReads: number;
  /** 404 or 410 answers for accepted jobs during those reads. */
  statusAnomalies: StatusAnomaly[];
  /** Faults applied. */
  faults: FaultCounts;
  /** Faults planned; fewer are applied only when the client stopped early. */
  plannedFaults: number;
  /** The nemesis's or healing's error, when a process did not come back. */
  error: string | undefined;
  /** Every verdict other than `completed`, with its reason. */
  problems: Verdict[];
  /** Logs and backend calls of the first few lost or mismatched jobs and status anomalies. */
  traces: string[];
  /** The Jepsen-style summary line, then a line of details. */
  summary: string;
}

export interface FaultRun {
  run(): Promise<FaultReport>;
  /** Stops every process and removes temporary files; idempotent, safe while `run` is going. */
  close(): Promise<void>;
}

/** Backend answers between two faults: the system must be moving again before the next one. */
const SETTLE_CALLS = 25;
const SETTLE_TIMEOUT_MS = 45_000;
const MAX_TRACES = 10;
/** At most this many 1 ms polls for a submission in flight before a fault. */
const IN_FLIGHT_WAIT_POLLS = 2_000;

/** Reads `<PREFIX>_JOBS`, `_WORKERS`, `_SEED`, `_WORKER_KILLS`... over `defaults`. */
export function readFaultRunOptions(
  env: NodeJS.ProcessEnv,
  prefix: string,
  defaults: Omit<FaultRunOptions, "seed">,
): FaultRunOptions {
  const num = (name: string, fallback: number): number => {
    const raw = env[`${prefix}_${name}`];
    if (raw === undefined || raw === "") return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || value < 0) throw new Error(`${prefix}_${name}=${raw} is not a non-negative number`);
    return value;
  };
  return {
    ...defaults,
    jobs: num("JOBS", defaults.jobs),
    workers: Math.max(1, num("WORKERS", defaults.workers)),
    concurrency: num("CONCURRENCY", defaults.concurrency),
    clientConcurrency: num("CLIENT_CONCURRENCY", defaults.clientConcurrency),
    maxBacklog: num("MAX_BACKLOG", defaults.maxBacklog),
    faults: {
      [Fault.WorkerKill]: num("WORKER_KILLS", defaults.faults[Fault.WorkerKill]),
      [Fault.ProxyKill]: num("PROXY_KILLS", defaults.faults[Fault.ProxyKill]),
      [Fault.NatsTerm]: num("NATS_TERMS", defaults.faults[Fault.NatsTerm]),
      [Fault.NatsKill]: num("NATS_KILLS", defaults.faults[Fault.NatsKill]),
      [Fault.BackendKill]: num("BACKEND_KILLS", defaults.faults[Fault.BackendKill]),
    },
    backendOutageMs: num("BACKEND_OUTAGE_MS", defaults.backendOutageMs),
    seed: num("SEED", newSeed()),
    ...(env[`${prefix}_LOG_DIR`] ? { logDir: env[`${prefix}_LOG_DIR`] } : {}),
    submitTimeoutMs: num("SUBMIT_TIMEOUT_MS", defaults.submitTimeoutMs),
    checkTimeoutMs: num("CHECK_TIMEOUT_MS", defaults.checkTimeoutMs),
  };
}

function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function countBy<T>(items: readonly T[], key: (item: T) => string): string {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return [...counts].map(([k, n]) => `${k}=${n}`).join(",") || "none";
}

/** Every log line of every process that names the job, the faults around it, and its backend calls. */
function traceJob(
  job: Accepted,
  headline: string,
  processes: readonly ClusterProcess[],
  backend: FaultBackend,
  timeline: readonly FaultEvent[],
): string {
  const lines = processes.flatMap((p) =>
    p.process.logs
      .filter((l) => l.job === job.id)
      .map((l) => ({ time: Number(l.time ?? 0), text: `${p.name}: ${l.msg ?? ""} ${JSON.stringify({ attempt: l.attempt, error: l.error })}` })),
  );
  const faults = timeline.map((f) => ({ time: f.at, text: `nemesis: ${f.detail}` }));
  const events = [...lines, ...faults].sort((a, b) => a.time - b.time).map((e) => `    ${new Date(e.time).toISOString()} ${e.text}`);
  return [
    `  ${headline} ${job.id} (token ${job.token}, try ${job.tryNo})`,
    `    backend calls for this submission: ${backend.callsFor(job.key)}`,
    ...events,
  ].join("\n");
}

function writeLogs(dir: string, cluster: FaultCluster, timeline: readonly FaultEvent[], jsz: readonly string[]): void {
  mkdirSync(dir, { recursive: true });
  for (const p of cluster.processes) {
    writeFileSync(join(dir, `${p.name}.log`), p.process.logs.map((l) => JSON.stringify(l)).join("\n") + "\n");
  }
  writeFileSync(join(dir, "nats-server.log"), cluster.nats.output());
  writeFileSync(join(dir, "jsz.log"), jsz.join("\n") + "\n");
  writeFileSync(join(dir, "timeline.log"), timeline.map((f) => `${new Date(f.at).toISOString()} ${f.at} ${f.detail}`).join("\n") + "\n");
}

function summarize(report: Omit<FaultReport, "summary">, submitted: SubmitReport, backend: FaultBackend, durationMs: number): string {
  const f = report.faults;
  const natsRestarts = f[Fault.NatsTerm] + f[Fault.NatsKill];
  return [
    `accepted: ${report.accepted}  completed: ${report.completed}  failed: ${report.failed}  lost: ${report.lost}  ` +
      `duplicates: ${report.duplicates} (calls repeated)  not-accepted: ${report.notAccepted}  ` +
      `faults: worker-kills=${f[Fault.WorkerKill]} proxy-kills=${f[Fault.ProxyKill]} nats-restarts=${natsRestarts} ` +
      `backend-kills=${f[Fault.BackendKill]}`,
    `  seed=${report.seed} mismatched=${report.mismatched} given-up=${report.givenUp} duplicated-jobs=${report.duplicatedJobs} ` +
      `unacknowledged-but-run=${report.unacknowledgedRuns} backend-calls=${backend.calls} ` +
      `status-reads-during-faults=${report.statusReads} status-404s=${report.statusAnomalies.length} ` +
      `faults-applied=${Object.values(f).reduce((x, y) => x + y, 0)}/${report.plannedFaults} ` +
      `nats-restarts: SIGTERM=${f[Fault.NatsTerm]} SIGKILL=${f[Fault.NatsKill]} ` +
      `not-accepted-by-reason: ${countBy(submitted.notAccepted, (n) => n.reason)} ` +
      `unacknowledged-but-run-by-reason: ${countBy(submitted.notAccepted.filter((n) => backend.callsFor(n.key) > 0), (n) => n.reason)} ` +
      `time=${(durationMs / 1000).toFixed(1)}s`,
  ].join("\n");
}

export function createFaultRun(options: FaultRunOptions): FaultRun {
  const note = options.note ?? (() => undefined);
  let backend: FaultBackend | undefined;
  let cluster: FaultCluster | undefined;
  let client: ProxyClient | undefined;
  let closing: Promise<void> | undefined;

  const close = (): Promise<void> => {
    closing ??= (async () => {
      await client?.close().catch(() => undefined);
      await cluster?.close();
      await backend?.close();
    })();
    return closing;
  };

  async function run(): Promise<FaultReport> {
    const startedAt = Date.now();
    const random = createRandom(options.seed);
    backend = await startFaultBackend({ random: createRandom(options.seed ^ 0x5eed), slowShare: options.slowShare });
    const calls = backend;
    cluster = await startFaultCluster({ backendUrl: calls.url, workers: options.workers, concurrency: options.concurrency });
    const system = cluster;
    client = createProxyClient(system.proxyUrl);
    note(`cluster up (nats ${system.nats.url}, proxy ${system.proxyUrl}, stream ${system.stream}); seed ${options.seed}`);

    const submitter = startSubmitter({
      client,
      backend: calls,
      random,
      jobs: options.jobs,
      concurrency: options.clientConcurrency,
      maxBacklog: options.maxBacklog,
      deadline: Date.now() + options.submitTimeoutMs,
    });
    let submitting = true;
    const submitted = submitter.done.finally(() => (submitting = false));
    const sampler = options.logDir ? startJszSampler(system.nats.monitorUrl, system.stream) : undefined;
    const reader = startStatusReader({ client, random: createRandom(options.seed ^ 0x4ead), accepted: submitter.accepted });

    const plan = planFaults(options.faults, random);
    const applied = noFaults();
    const timeline: FaultEvent[] = [];
    const errors: string[] = [];
    const nemesis = runNemesis({
      cluster: system,
      backend: calls,
      backendOutageMs: options.backendOutageMs,
      random,
      plan,
      applied,
      timeline,
      note,
      async due(index) {
        const threshold = Math.ceil(((index + 1) * options.jobs) / (plan.length + 1));
        while (submitting && submitter.accepted.length < threshold) await sleep(50);
        // Strike while a submission is on the wire, when there is one to be had: the interesting
        // interleavings (persisted but not answered, published during a restart) need it.
        for (let i = 0; i < IN_FLIGHT_WAIT_POLLS && submitting && submitter.inFlight === 0; i++) await sleep(1);
        // Only a client that stopped early (deadline, errors) ends before the last threshold.
        return submitter.accepted.length >= threshold;
      },
      async settle() {
        const from = calls.answered;
        await waitFor(() => calls.answered >= from + SETTLE_CALLS || !submitting, {
          timeoutMs: SETTLE_TIMEOUT_MS,
          intervalMs: 50,
          what: `${SETTLE_CALLS} backend answers after "${timeline.at(-1)?.detail ?? "a fault"}"`,
        });
      },
    }).catch((err: unknown) => {
      errors.push(`nemesis: ${describeError(err)}`);
    });

    const submitReport = await submitted;
    if (submitReport.stoppedBecause !== undefined) errors.push(`client stopped: ${submitReport.stoppedBecause}`);
    await nemesis;
    await reader.stop();
    note(`submitted: ${submitReport.accepted.length} accepted; faults done: ${timeline.length}/${plan.length}`);
    await calls.restart();
    await system.heal().catch((err: unknown) => {
      errors.push(`heal: ${describeError(err)}`);
    });
    note("healed; checking every accepted job");

    const checkStartedAt = Date.now();
    const verdicts = await checkJobs({ client, accepted: submitReport.accepted, deadline: Date.now() + options.checkTimeoutMs });
    note(`checked ${verdicts.length} jobs in ${Date.now() - checkStartedAt} ms`);
    const count = (outcome: Outcome): number => verdicts.filter((v) => v.outcome === outcome).length;
    let duplicates = 0;
    let duplicatedJobs = 0;
    for (const job of submitReport.accepted) {
      const extra = calls.callsFor(job.key) - 1;
      if (extra > 0) {
        duplicates += extra;
        duplicatedJobs += 1;
      }
    }
    const problems = verdicts.filter((v) => v.outcome !== Outcome.Completed);
    const report: Omit<FaultReport, "summary"> = {
      seed: options.seed,
      accepted: submitReport.accepted.length,
      completed: count(Outcome.Completed),
      failed: count(Outcome.Failed),
      lost: count(Outcome.Lost),
      mismatched: count(Outcome.Mismatched),
      duplicates,
      duplicatedJobs,
      notAccepted: submitReport.notAccepted.length,
      unacknowledgedRuns: submitReport.notAccepted.filter((n) => calls.callsFor(n.key) > 0).length,
      givenUp: submitReport.givenUp.length,
      statusReads: reader.reads,
      statusAnomalies: [...reader.anomalies],
      faults: applied,
      plannedFaults: plan.length,
      error: errors.length > 0 ? errors.join("; ") : undefined,
      problems,
      traces: [
        ...problems
          .filter((v) => v.outcome !== Outcome.Failed)
          .map((v) => ({ job: v.job, headline: `${v.outcome}: ${v.detail}:` })),
        ...reader.anomalies.map((a) => ({
          job: a.job,
          headline: `status ${a.status} during the run at ${new Date(a.at).toISOString()} (${a.body}) for`,
        })),
      ]
        .slice(0, MAX_TRACES)
        .map((t) => traceJob(t.job, t.headline, system.processes, calls, timeline)),
    };
    if (options.logDir) writeLogs(options.logDir, system, timeline, (await sampler?.stop()) ?? []);
    return { ...report, summary: summarize(report, submitReport, calls, Date.now() - startedAt) };
  }

  return {
    async run() {
      try {
        return await run();
      } finally {
        await close();
      }
    },
    close,
  };
}

/** The report as text: summary, errors, reasons of failed jobs, traces of lost ones. */
export function formatReport(report: FaultReport): string {
  const failed = report.problems.filter((v) => v.outcome === Outcome.Failed);
  return [
    report.summary,
    ...(report.error ? [`error: ${report.error}`] : []),
    ...(failed.length > 0 ? [`failed jobs by reason: ${countBy(failed, (v) => v.detail)}`] : []),
    ...report.traces,
  ].join("\n");
}
