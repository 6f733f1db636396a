/**
 * What `slowlane jobs` does to JetStream state: list job records, show one job with its queue and
 * dead-letter state, and retry failed jobs from their dead letters. Nothing here prints: the
 * command (`jobs-command.ts`) formats the results.
 *
 * Retrying a failed job, in this order:
 *   1. its record goes back to `queued` (failures 0, error and expiry cleared, `retries` + 1), written
 *      only if nobody changed it since it was read. It must precede the publish: a worker that
 *      pulls a message whose record says `failed` acks it and skips it as already finished. Then
 *      every proxy is told to drop the job from its cache of finished jobs;
 *   2. the dead letter is published to the job's subject with a new `Nats-Msg-Id` (the job id may
 *      still be in the duplicate window) and the PubAck awaited; if that fails, the `failed`
 *      record is put back (unless a worker has written it meanwhile: then the message got through);
 *   3. the dead letter is deleted, by sequence, so that a new one the job may already have left
 *      after failing again is kept.
 */
import { deleteDeadLetter, getDeadLetter, requeueDeadLetter } from "../jobs/dead-letters.js";
import type { DeadLetter } from "../jobs/dead-letters.js";
import { decodeEnvelope } from "../jobs/envelope.js";
import { isJobId } from "../jobs/job-id.js";
import type { JetStreamContext } from "../nats/provision.js";
import { isExpired, JobStatus } from "../jobs/record.js";
import type { JobRecord } from "../jobs/record.js";
import { createJobStore } from "../jobs/store.js";
import type { JobStore, VersionedRecord } from "../jobs/store.js";

/** Job records read from KV at once while listing. */
const READ_CONCURRENCY = 32;

/** An operational failure of a jobs command (exit 1), with a message meant for the operator. */
export class JobsCommandError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

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

export interface RetryResult {
  readonly id: string;
  readonly route: string;
  /** How many times the job has been retried from its dead letter, this time included. */
  readonly retries: number;
  /** The `Nats-Msg-Id` of the requeued message. */
  readonly msgId: string;
  /** Set when the job was requeued but its dead letter could not be deleted. */
  readonly warning?: string;
}

export type RetryOutcome = ({ ok: true } & RetryResult) | { ok: false; id: string; route: string; reason: string };

/** Subjects of a stream that match `filter`, with the job's route and id taken from the last two tokens. */
async function jobSubjects(
  context: Pick<JetStreamContext, "jsm">,
  stream: string,
  filter: string,
): Promise<{ route: string; id: string }[]> {
  const info = await context.jsm.streams.info(stream, { subjects_filter: filter });
  return Object.keys(info.state.subjects ?? {}).map((subject) => {
    const tokens = subject.split(".");
    return { route: tokens.at(-2) ?? "", id: tokens.at(-1) ?? "" };
  });
}

/** Jobs with a message in the work queue, of one route or all. */
function queuedJobs(context: Pick<JetStreamContext, "jsm" | "names">, route?: string): Promise<{ route: string; id: string }[]> {
  const { names } = context;
  return jobSubjects(context, names.stream, route ? names.routeFilter(route) : `${names.stream}.jobs.>`);
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
      jobSubjects(context, names.stream, `${names.stream}.jobs.*.${id}`),
      jobSubjects(context, names.deadStream, `${names.stream}.dead.*.${id}`),
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

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The failed record and dead letter of a job that can be retried; throws the reason when it cannot. */
async function checkRetryable(context: JetStreamContext, store: JobStore, id: string): Promise<VersionedRecord & { letter: DeadLetter }> {
  const { names } = context;
  const read = await store.readRecord(id);
  if (!read) {
    const queued = await jobSubjects(context, names.stream, `${names.stream}.jobs.*.${id}`);
    if (queued.length > 0) throw new JobsCommandError(`job ${id} is queued (no worker has started it yet), not failed: nothing to retry`);
    throw new JobsCommandError(`no such job: ${id}`);
  }
  const { record } = read;
  if (record.status !== JobStatus.Failed) {
    throw new JobsCommandError(`job ${id} is ${record.status}, not failed: only failed jobs can be retried`);
  }
  const letter = await getDeadLetter(context, record.route, id);
  if (!letter) {
    throw new JobsCommandError(`job ${id} failed but has no dead letter (it has expired, or was already retried): it cannot be retried`);
  }
  // A body too large for a message is in the Object Store (the claim check); it may have expired first.
  const storedBody = decodeEnvelope(letter.headers)?.storedBody;
  if (storedBody !== undefined) {
    const body = await context.bodies.info(storedBody.name);
    if (!body || body.deleted) throw new JobsCommandError(`job ${id}: its request body has expired: it cannot be retried`);
  }
  return { ...read, letter };
}

/** Puts a failed job back in the work queue from its dead letter (see the top of this file). */
export async function retryJob(context: JetStreamContext, id: string, now = Date.now()): Promise<RetryResult> {
  if (!isJobId(id)) throw new JobsCommandError(`no such job: ${id} (not a job id)`);
  const store = createJobStore(context);
  const { record, revision, letter } = await checkRetryable(context, store, id);

  // 1. The record first: queued, a clean slate of failures, attempts kept for the history.
  const retries = (record.retries ?? 0) + 1;
  const { error: _error, expiresAt: _expiresAt, ...kept } = record;
  const requeued: JobRecord = { ...kept, status: JobStatus.Queued, failures: 0, retries, updatedAt: now };
  const queuedRevision = await store.updateRecord(requeued, revision);
  if (queuedRevision === undefined) {
    throw new JobsCommandError(`job ${id} changed while it was being retried (another retry?); see: slowlane jobs show ${id}`);
  }

  // Proxies cache final records: the notice that makes them forget a canceled job makes them forget
  // the failed one. Sent now, while no worker can be running the job (a worker aborts a running call
  // on this notice), and before the message, so no proxy can cache the failed record again after it.
  context.nc.publish(context.names.cancelSubject(id));

  // 2. The request back in the work queue. The dead letter's sequence makes the msg id unique per
  // dead letter, so two retries of the same dead letter can never queue the job twice.
  const msgId = `${id}.retry.${letter.seq}`;
  try {
    const ack = await requeueDeadLetter(context, letter, msgId);
    if (ack.duplicate && !(await isInQueue(context, record.route, id))) {
      throw new JobsCommandError(
        `job ${id}: this dead letter was requeued less than 2 minutes ago and that message is gone; try again in 2 minutes`,
      );
    }
  } catch (err) {
    // Put the failed record back, unless a worker wrote the record meanwhile (the message got through).
    const restored = await store.updateRecord(record, queuedRevision).then(
      (written) => (written === undefined ? "a worker has picked it up meanwhile" : "its record is failed again"),
      (restoreErr: unknown) => `restoring its failed record failed too: ${reason(restoreErr)}`,
    );
    if (err instanceof JobsCommandError) throw new JobsCommandError(`${err.message} (${restored})`, { cause: err });
    throw new JobsCommandError(`job ${id} could not be requeued: ${reason(err)} (${restored})`, { cause: err });
  }

  // 3. The dead letter, by sequence: a newer one (the job failed again already) stays.
  const warning = await deleteDeadLetter(context, record.route, id, letter.seq).then(
    () => undefined,
    (err: unknown) => `requeued, but its dead letter could not be deleted (it expires by itself): ${reason(err)}`,
  );
  return { id, route: record.route, retries, msgId, ...(warning ? { warning } : {}) };
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
      outcomes.push({ ok: false, id: job.id, route: job.route, reason: reason(err) });
    }
  }
  return outcomes;
}
