/**
 * What `slowlane jobs list|show` read from JetStream: job records, one job with its queue and
 * dead-letter state. Nothing here prints: the command (`jobs-command.ts`) formats the results;
 * retrying is a transition of the job's life, in `jobs/requeue.ts`.
 *
 */
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { JobsCommandError, messageOf } from "../errors.js";
import { getDeadLetter } from "../jobs/dead-letters.js";
import { isJobId } from "../jobs/job-id.js";
import type { JetStreamContext } from "../nats/context.js";
import { isExpired, JobStatus } from "../jobs/record.js";
import { retryJob } from "../jobs/requeue.js";
import type { RetryOutcome } from "../jobs/requeue.js";
import type { JobRecord } from "../jobs/record.js";
import { createJobStore } from "../jobs/store.js";

/** Job records read from KV at once while listing. */
const READ_CONCURRENCY = 32;

export interface JobFilter {
  status?: string | undefined;
  route?: string | undefined;
}

/** One line of `jobs list`: a job record, or a queued job no worker has started (it has no record yet). */
export interface JobListing {
  readonly id: string;
  readonly route: string;
  readonly status: string;
  /** `undefined` for a queued job that no worker has started. */
  readonly record: JobRecord | undefined;
}

export interface DeadLetterSummary {
  /** Epoch milliseconds when the worker stored it. */
  readonly deadAt: number;
  readonly bodyBytes: number;
}

export interface JobDetails {
  readonly id: string;
  readonly route: string;
  readonly status: string;
  readonly record: JobRecord | undefined;
  /** A message of this job is in the work queue (waiting, being worked, or between attempts). */
  readonly inQueue: boolean;
  readonly deadLetter: DeadLetterSummary | undefined;
}

/** A route paused in some worker process: its circuit is open there (the backend was unreachable). */
export interface PausedRoute {
  readonly route: string;
  /** Worker processes where it is paused. */
  readonly workers: number;
  /** Epoch ms of the earliest opening among them. */
  readonly since: number;
}

const decoder = new TextDecoder();

/**
 * The routes whose circuit is open in at least one live worker, from the circuits bucket (each
 * worker keeps a key per open circuit fresh; a dead worker's expire). Empty when the bucket does
 * not exist: no proxy or worker of this version has run.
 */
export async function listPausedRoutes(context: Pick<JetStreamContext, "js" | "names">): Promise<PausedRoute[]> {
  const paused = new Map<string, { workers: number; since: number }>();
  let kv: KV;
  try {
    kv = await new Kvm(context.js).open(context.names.circuitsBucket);
  } catch {
    return [];
  }
  for await (const key of await kv.keys()) {
    const route = context.names.routeOfCircuitKey(key);
    const entry = route === undefined ? null : await kv.get(key);
    if (route === undefined || !entry || entry.operation !== "PUT") continue;
    const seen = paused.get(route) ?? { workers: 0, since: Infinity };
    paused.set(route, { workers: seen.workers + 1, since: Math.min(seen.since, openedAtOf(entry.value)) });
  }
  return [...paused].map(([route, p]) => ({ route, ...p })).sort((a, b) => a.route.localeCompare(b.route));
}

/** When a circuit opened, from its key's value; now when the value cannot be read. */
function openedAtOf(value: Uint8Array): number {
  try {
    const openedAt = (JSON.parse(decoder.decode(value)) as { openedAt?: unknown } | null)?.openedAt;
    return typeof openedAt === "number" && Number.isFinite(openedAt) ? openedAt : Date.now();
  } catch {
    return Date.now();
  }
}

/** The jobs whose subjects in a stream match `filter`. */
async function jobSubjects(
  context: Pick<JetStreamContext, "jsm" | "names">,
  stream: string,
  filter: string,
): Promise<{ route: string; id: string }[]> {
  const info = await context.jsm.streams.info(stream, { subjects_filter: filter });
  return Object.keys(info.state.subjects ?? {}).flatMap((subject) => context.names.parseJobSubject(subject) ?? []);
}

/** Jobs with a message in the work queue, of one route or all. */
function queuedJobs(context: Pick<JetStreamContext, "jsm" | "names">, route?: string): Promise<{ route: string; id: string }[]> {
  const { names } = context;
  return jobSubjects(context, names.stream, route ? names.routeFilter(route) : names.jobsFilter);
}

async function isInQueue(context: Pick<JetStreamContext, "jsm" | "names">, route: string, id: string): Promise<boolean> {
  return (await jobSubjects(context, context.names.stream, context.names.jobSubject(route, id))).length > 0;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * Job records matching the filter, oldest change first; then, when queued jobs are asked for, the
 * queued jobs that have no record yet (a job gets its record when a worker first starts it).
 */
export async function listJobs(context: JetStreamContext, filter: JobFilter = {}): Promise<JobListing[]> {
  const keys: string[] = [];
  for await (const key of await context.jobs.keys()) keys.push(key);
  const store = createJobStore(context);
  const read = await mapLimit(keys, READ_CONCURRENCY, (key) => store.readRecord(key));
  const records = read.flatMap((r) => (r ? [r.record] : []));
  const listed: JobListing[] = records
    .filter((r) => (filter.status === undefined || r.status === filter.status) && (filter.route === undefined || r.route === filter.route))
    .sort((a, b) => a.updatedAt - b.updatedAt)
    .map((record) => ({ id: record.id, route: record.route, status: record.status, record }));

  if (filter.status === undefined || filter.status === JobStatus.Queued) {
    const known = new Set(records.map((r) => r.id));
    const waiting = (await queuedJobs(context, filter.route))
      .filter((job) => !known.has(job.id))
      .sort((a, b) => a.route.localeCompare(b.route) || a.id.localeCompare(b.id));
    for (const job of waiting) listed.push({ ...job, status: JobStatus.Queued, record: undefined });
  }
  return listed;
}

/** Everything known about one job; throws "no such job" when there is nothing. */
export async function showJob(context: JetStreamContext, id: string): Promise<JobDetails> {
  if (!isJobId(id)) throw new JobsCommandError(`no such job: ${id} (not a job id)`);
  const { names } = context;
  const read = await createJobStore(context).readRecord(id);
  let route = read?.record.route;
  let inQueue = false;
  if (route === undefined) {
    // No record: a queued job not started yet, or a record that has expired before its dead letter.
    const [queued, dead] = await Promise.all([
      jobSubjects(context, names.stream, names.jobOfIdFilter(id)),
      jobSubjects(context, names.deadStream, names.deadOfJobFilter(id)),
    ]);
    route = queued[0]?.route ?? dead[0]?.route;
    inQueue = queued.length > 0;
    if (route === undefined) throw new JobsCommandError(`no such job: ${id}`);
  } else {
    inQueue = await isInQueue(context, route, id);
  }
  const letter = await getDeadLetter(context, route, id);
  return {
    id,
    route,
    status: read?.record.status ?? (inQueue ? JobStatus.Queued : "unknown"),
    record: read?.record,
    inQueue,
    deadLetter: letter ? { deadAt: letter.deadAt, bodyBytes: letter.data.byteLength } : undefined,
  };
}

/**
 * Retries every failed job (of one route, or all) whose result has not expired yet. Each job is
 * retried on its own: one that cannot be retried is reported and does not stop the others.
 */
export async function retryFailedJobs(context: JetStreamContext, route?: string, now = Date.now()): Promise<RetryOutcome[]> {
  const failed = (await listJobs(context, { status: JobStatus.Failed, route })).filter(
    (job) => job.record !== undefined && !isExpired(job.record, now),
  );
  const outcomes: RetryOutcome[] = [];
  for (const job of failed) {
    try {
      outcomes.push({ ok: true, ...(await retryJob(context, job.id, now)) });
    } catch (err) {
      outcomes.push({ ok: false, id: job.id, route: job.route, reason: messageOf(err) });
    }
  }
  return outcomes;
}
