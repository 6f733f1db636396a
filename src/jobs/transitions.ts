/**
 * The job's state machine: the only functions that move a job from one status to another, and the
 * only code that builds a record. Each write is a compare-and-set on the revision last read or
 * written, so two writers never overwrite each other: a cancel is never lost under a worker's
 * result, and a redelivered job's second worker cannot write over the first's.
 *
 *   accepted (no record: the message is the proof)
 *     ─ start ─▶ running ─ complete ─▶ completed
 *                   │ ─ retryLater ─▶ queued ─ start ─▶ running …
 *                   │ ─ handBack ───▶ queued (a shutdown or our own trouble: not counted)
 *                   └ ─ fail ───────▶ failed ─ requeue (slowlane jobs retry) ─▶ queued
 *     any status that is not final ─ cancel ─▶ canceled
 *
 * Whoever moves a job calls one of these; observers of transitions (metrics, logs) hook in at the
 * callers, which know why a job moved.
 */
import type { JobTraceCarrier } from "../tracing/index.js";
import type { JobRequest } from "./envelope.js";
import { JobStatus, isFinal, withAttempt } from "./record.js";
import type { AttemptRecord, JobFailure, JobRecord, StoredResponse } from "./record.js";
import type { JobStore, VersionedRecord } from "./store.js";

/** A record as this process last wrote or read it, with its revision: what the next write compares against. */
export interface TrackedJob {
  record: JobRecord;
  revision: number;
}

/** Writes `next` if the record is still at the tracked revision; false when someone else wrote it first. */
async function advance(store: JobStore, tracked: TrackedJob, next: JobRecord): Promise<boolean> {
  const revision = await store.writeRecord(next, tracked.revision);
  if (revision === undefined) return false;
  tracked.record = next;
  tracked.revision = revision;
  return true;
}

/** What the status URL shows for a job no worker has started yet (it has no record: its message is the proof). */
export function toQueuedView(request: Pick<JobRequest, "id" | "route" | "createdAt">): JobRecord {
  const { id, route, createdAt } = request;
  return { id, route, status: JobStatus.Queued, attempts: 0, createdAt, updatedAt: createdAt };
}

/** How a worker's start of a job turned out. */
export type StartOutcome =
  /** The record says `running` now; the call may start. */
  | { readonly kind: "started"; readonly tracked: TrackedJob }
  /** The job is final already (canceled before it started, or finished but its ack was lost). */
  | { readonly kind: "final"; readonly record: JobRecord }
  /** It was interrupted mid-call too often (a poison job): `tracked` is where to fail it from. */
  | { readonly kind: "poison"; readonly tracked: TrackedJob; readonly interruptions: number }
  /** Someone else wrote the record between the read and the write. */
  | { readonly kind: "lost" };

/**
 * Writes the job's record `running`. A first delivery creates it outright (one write); only when a
 * record exists already (canceled before it started, requeued by `slowlane jobs retry`) or on a
 * redelivery is it read first. A record still `running` at a start is a start that never ended:
 * its worker died mid-call, which counts as an interruption.
 */
export async function startJob(
  store: JobStore,
  job: JobRequest,
  options: { firstDelivery: boolean; maxInterruptions: number; now?: number },
): Promise<StartOutcome> {
  const now = options.now ?? Date.now();
  const base = { id: job.id, route: job.route, createdAt: job.createdAt, updatedAt: now };
  if (options.firstDelivery) {
    const record: JobRecord = { ...base, status: JobStatus.Running, attempts: 1, failures: 0, interruptions: 0 };
    const revision = await store.writeRecord(record, 0);
    if (revision !== undefined) return { kind: "started", tracked: { record, revision } };
  }
  const previous = await store.readRecord(job.id);
  if (previous && isFinal(previous.record)) return { kind: "final", record: previous.record };
  const before = previous?.record;
  const tracked: TrackedJob = {
    revision: previous?.revision ?? 0,
    record: {
      ...base,
      status: JobStatus.Queued,
      attempts: before?.attempts ?? 0,
      failures: before?.failures ?? 0,
      ...(before?.history ? { history: before.history } : {}),
      ...(before?.retries ? { retries: before.retries } : {}),
      ...(before?.attemptTrace ? { attemptTrace: before.attemptTrace } : {}),
      interruptions: (before?.interruptions ?? 0) + (before?.status === JobStatus.Running ? 1 : 0),
    },
  };
  const interruptions = tracked.record.interruptions ?? 0;
  if (interruptions >= options.maxInterruptions) return { kind: "poison", tracked, interruptions };
  const running: JobRecord = { ...tracked.record, status: JobStatus.Running, attempts: tracked.record.attempts + 1 };
  return (await advance(store, tracked, running)) ? { kind: "started", tracked } : { kind: "lost" };
}

/**
 * Keeps a started attempt's span in the record, so the next attempt can link to it: written with
 * the attempt's next transition (completed, retry, failed, handed back), not on its own.
 */
export function noteAttemptTrace(tracked: TrackedJob, carrier: JobTraceCarrier | undefined): void {
  if (carrier !== undefined) tracked.record = { ...tracked.record, attemptTrace: carrier };
}

/** running → completed, with the stored response and the call in the history. */
export function completeJob(
  store: JobStore,
  tracked: TrackedJob,
  outcome: { response: StoredResponse; call: AttemptRecord; ttlMs: number; now?: number },
): Promise<boolean> {
  const now = outcome.now ?? Date.now();
  return advance(store, tracked, {
    ...tracked.record,
    status: JobStatus.Completed,
    updatedAt: now,
    expiresAt: now + outcome.ttlMs,
    history: withAttempt(tracked.record.history, outcome.call),
    response: outcome.response,
  });
}

/** → failed (attempts exhausted, response too large, poison, unreadable request): final, kept `ttlMs`. */
export function failJob(
  store: JobStore,
  tracked: TrackedJob,
  failure: { error: JobFailure; ttlMs: number; call?: AttemptRecord; countFailure?: boolean; now?: number },
): Promise<boolean> {
  const now = failure.now ?? Date.now();
  const { record } = tracked;
  return advance(store, tracked, {
    ...record,
    status: JobStatus.Failed,
    updatedAt: now,
    expiresAt: now + failure.ttlMs,
    error: failure.error,
    ...(failure.call ? { history: withAttempt(record.history, failure.call) } : {}),
    ...(failure.countFailure ? { failures: (record.failures ?? 0) + 1 } : {}),
  });
}

/** running → queued after a failed call that counts against the route's attempts; the message is nak'ed next. */
export function retryLater(store: JobStore, tracked: TrackedJob, failure: { error: JobFailure; call: AttemptRecord }): Promise<boolean> {
  const { record } = tracked;
  return advance(store, tracked, {
    ...record,
    status: JobStatus.Queued,
    updatedAt: Date.now(),
    error: failure.error,
    failures: (record.failures ?? 0) + 1,
    history: withAttempt(record.history, failure.call),
  });
}

/**
 * running → queued without counting the start: the call was cut short by us (a shutdown, a store
 * write that failed), not by the job. Only while the record says `running`: once it is final the
 * job is done and must stay so.
 */
export async function handBack(store: JobStore, tracked: TrackedJob, call: Omit<AttemptRecord, "attempt" | "startedAt">): Promise<boolean> {
  const { record } = tracked;
  if (record.status !== JobStatus.Running) return false;
  const entry: AttemptRecord = { attempt: record.attempts, startedAt: record.updatedAt, ...call };
  return advance(store, tracked, {
    ...record,
    status: JobStatus.Queued,
    attempts: record.attempts - 1,
    updatedAt: Date.now(),
    history: withAttempt(record.history, entry),
  });
}

/** A job's record (queued or running) → canceled; resolves to the new revision, or `undefined` if it changed meanwhile. */
export function cancelRecord(store: JobStore, found: VersionedRecord, ttlMs: number, now = Date.now()): Promise<number | undefined> {
  return store.writeRecord({ ...found.record, status: JobStatus.Canceled, updatedAt: now, expiresAt: now + ttlMs }, found.revision);
}

/** A job nobody started (no record) → canceled: the record a worker that pulls its message obeys. */
export function cancelUnstarted(store: JobStore, request: JobRequest, ttlMs: number, now = Date.now()): Promise<number | undefined> {
  const record: JobRecord = { ...toQueuedView(request), status: JobStatus.Canceled, updatedAt: now, expiresAt: now + ttlMs };
  return store.writeRecord(record, 0);
}

/**
 * failed → queued for `slowlane jobs retry`: a clean slate of failures, error and expiry cleared,
 * attempts kept for the history, `retries` + 1. `undefined` when the record changed since read.
 */
export async function requeueFailed(store: JobStore, found: VersionedRecord, now = Date.now()): Promise<TrackedJob | undefined> {
  const { error: _error, expiresAt: _expiresAt, ...kept } = found.record;
  const record: JobRecord = { ...kept, status: JobStatus.Queued, failures: 0, retries: (found.record.retries ?? 0) + 1, updatedAt: now };
  const revision = await store.writeRecord(record, found.revision);
  return revision === undefined ? undefined : { record, revision };
}

/** Undoes {@link requeueFailed} when the requeue could not be published; false when a worker wrote meanwhile. */
export async function restoreFailed(store: JobStore, failed: JobRecord, requeued: TrackedJob): Promise<boolean> {
  return (await store.writeRecord(failed, requeued.revision)) !== undefined;
}
