/**
 * The job's state machine: the only functions that move a job from one status to another, and the
 * only code that builds a record. Each write is a compare-and-set on the revision last read or
 * written, so two writers never overwrite each other: a cancel is never lost under a worker's
 * result, and a redelivered job's second worker cannot write over the first's.
 *
 *   accepted (no record: the message is the proof)
 *     ─ start ─▶ running ─ complete ─▶ completed
 *                   │ ─ retryLater ─▶ queued ─ start ─▶ running …
 *                   │ ─ handBack ───▶ queued (a shutdown, our own trouble, a backend known down: not counted)
 *                   │ ─ touch ──────▶ running (the same record again, so a long call's record never ages out)
 *                   └ ─ fail ───────▶ failed ─ requeue (slowlane jobs retry) ─▶ queued
 *     ─ taken past its deadline, or an unusable request ─ fail ─▶ failed (the backend never called)
 *     any status that is not final ─ cancel ─▶ canceled
 *
 * Whoever moves a job calls one of these. Every record written here is told to the store's
 * {@link TransitionObserver} (completion events, long-polls and SSE, callback deliveries), and so is
 * each accepted job ({@link announceAccepted}): this file is the one place where transitions are
 * observed. Metrics and logs hook in at the callers, which know why a job moved.
 */
import type { JobTraceCarrier } from "../tracing/index.js";
import type { JobRequest } from "./envelope.js";
import { CallbackStatus, JobStatus, isFinal, withAttempt } from "./record.js";
import type { AttemptRecord, CallbackState, JobFailure, JobRecord, StoredResponse } from "./record.js";
import type { JobStore, VersionedRecord } from "./store.js";

/**
 * Told of every record this process writes, right after the write, and of every job accepted
 * (`queued`: it has no record yet). Give one to `createJobStore`.
 */
export interface TransitionObserver {
  /**
   * `record` is the job as just written. With `again`, a worker found the job final already at a
   * start: its previous worker wrote the final record and died before acking, so what that write
   * was to set going (a callback delivery) may not have been. A returned promise is awaited before
   * the transition resolves (what it persists is persisted before the job's message is acked); a
   * rejection rejects the transition, as a failed write would.
   */
  transitioned(store: JobStore, record: JobRecord, again?: boolean): void | Promise<void>;
}

async function observed(store: JobStore, record: JobRecord, again = false): Promise<void> {
  await store.observer?.transitioned(store, record, again);
}

/** A job's callback as a final transition leaves it: to be delivered for this final status. */
function pendingCallback(record: JobRecord): { callback?: CallbackState } {
  return record.callback ? { callback: { url: record.callback.url, status: CallbackStatus.Pending, attempts: 0 } } : {};
}

/** The callback a job's request asked for, not delivered yet. */
function requestedCallback(request: Pick<JobRequest, "callbackUrl">): { callback?: CallbackState } {
  return request.callbackUrl === undefined ? {} : { callback: { url: request.callbackUrl, status: CallbackStatus.Pending, attempts: 0 } };
}

/**
 * A record as this process last wrote or read it, with its revision: what the next write compares
 * against. Revision 0 means "no record": the next write creates it.
 */
export interface TrackedJob {
  record: JobRecord;
  revision: number;
  /** The write in progress, if any: writes of one tracked job run one after another (a touch may overlap a transition). */
  pending?: Promise<unknown>;
}

/**
 * Writes the record `next` builds from the tracked one, if the stored record is still at the
 * tracked revision; false when someone else wrote it first, or when `next` has nothing to write.
 * Writes of one tracked job are queued, and each `next` sees the record the write before it left.
 */
function advance(
  store: JobStore,
  tracked: TrackedJob,
  next: (current: JobRecord) => JobRecord | undefined,
  options: { observe?: boolean } = {},
): Promise<boolean> {
  const write = async (): Promise<boolean> => {
    const record = next(tracked.record);
    if (record === undefined) return false;
    const revision = await store.writeRecord(record, tracked.revision);
    if (revision === undefined) return false;
    tracked.record = record;
    tracked.revision = revision;
    // A touch (the same record written again) is no transition: nobody is told.
    if (options.observe !== false) await observed(store, record);
    return true;
  };
  const result = (tracked.pending ?? Promise.resolve()).then(write);
  tracked.pending = result.catch(() => undefined);
  return result;
}

/**
 * The record is gone from the bucket (aged out by its max_age, or deleted by hand) while this
 * worker still holds the job's message: the next write creates it again from what the worker
 * knows, and loses only to a record someone else creates first.
 */
export function forgetRevision(tracked: TrackedJob): void {
  tracked.revision = 0;
}

/** What a record keeps of the request for its whole life: who sent it and, for an idempotent one, what it was. */
function keptOf(request: Pick<JobRequest, "owner" | "fingerprint">): Pick<JobRecord, "owner" | "fingerprint"> {
  return {
    ...(request.owner === undefined ? {} : { owner: request.owner }),
    ...(request.fingerprint === undefined ? {} : { fingerprint: request.fingerprint }),
  };
}

/** Writes `record` where the job has none (or a deleted one); the new revision, or `undefined` if one exists. */
async function create(store: JobStore, record: JobRecord): Promise<number | undefined> {
  const revision = await store.writeRecord(record, 0);
  if (revision !== undefined) await observed(store, record);
  return revision;
}

/**
 * A job accepted: its message is persisted and it has no record (see {@link toQueuedView}). The
 * observer hears it as `queued`, the first transition of every job.
 */
export async function announceAccepted(store: JobStore, request: JobRequest): Promise<void> {
  await observed(store, toQueuedView(request));
}

/** What the status URL shows for a job no worker has started yet (it has no record: its message is the proof). */
export function toQueuedView(request: Pick<JobRequest, "id" | "route" | "createdAt" | "owner" | "fingerprint" | "callbackUrl">): JobRecord {
  const { id, route, createdAt } = request;
  return { id, route, status: JobStatus.Queued, attempts: 0, createdAt, updatedAt: createdAt, ...keptOf(request), ...requestedCallback(request) };
}

/** How a worker's start of a job turned out. */
export type StartOutcome =
  /** The record says `running` now; the call may start. */
  | { readonly kind: "started"; readonly tracked: TrackedJob }
  /** The job is final already (canceled before it started, or finished but its ack was lost). */
  | { readonly kind: "final"; readonly record: JobRecord }
  /** It was interrupted mid-call too often (a poison job): `tracked` is where to fail it from. */
  | { readonly kind: "poison"; readonly tracked: TrackedJob; readonly interruptions: number }
  /** It waited past its route's deadline before its first call: `tracked` is where to fail it from. */
  | { readonly kind: "expired"; readonly tracked: TrackedJob }
  /** Someone else wrote the record between the read and the write. */
  | { readonly kind: "lost" };

/**
 * Whether a job is past its route's deadline: it has had no call yet (`attempts` 0; the deadline
 * bounds the wait before the first call only) and was accepted more than `deadlineMs` ago.
 */
export function isPastDeadline(job: Pick<JobRequest, "createdAt">, attempts: number, deadlineMs: number | undefined, now = Date.now()): boolean {
  return deadlineMs !== undefined && attempts === 0 && now - job.createdAt > deadlineMs;
}

/** A job whose message a worker holds, as its record says: final already, or open to a next status. */
export type OpenedJob = { readonly kind: "final"; readonly record: JobRecord } | { readonly kind: "open"; readonly tracked: TrackedJob };

/**
 * Reads the job's record to move it on without starting a call: final already, or the record (a
 * queued one when it has none) to write the next status over. With `countInterruption`, a record
 * still `running` counts as a start that never ended (its worker died mid-call).
 */
export async function openJob(store: JobStore, job: JobRequest, options: { countInterruption?: boolean; now?: number } = {}): Promise<OpenedJob> {
  const previous = await store.readRecord(job.id);
  if (previous && isFinal(previous.record)) return { kind: "final", record: previous.record };
  const before = previous?.record;
  const interrupted = options.countInterruption === true && before?.status === JobStatus.Running;
  const record: JobRecord = {
    id: job.id,
    route: job.route,
    createdAt: job.createdAt,
    updatedAt: options.now ?? Date.now(),
    ...keptOf(job),
    ...(before?.callback ? { callback: before.callback } : requestedCallback(job)),
    status: JobStatus.Queued,
    attempts: before?.attempts ?? 0,
    failures: before?.failures ?? 0,
    ...(before?.history ? { history: before.history } : {}),
    ...(before?.retries ? { retries: before.retries } : {}),
    ...(before?.attemptTrace ? { attemptTrace: before.attemptTrace } : {}),
    interruptions: (before?.interruptions ?? 0) + (interrupted ? 1 : 0),
  };
  return { kind: "open", tracked: { revision: previous?.revision ?? 0, record } };
}

/**
 * Writes the job's record `running`. A first delivery creates it outright (one write); only when a
 * record exists already (canceled before it started, requeued by `slowlane jobs retry`) or on a
 * redelivery is it read first. A record still `running` at a start is a start that never ended:
 * its worker died mid-call, which counts as an interruption. A job past its deadline (see
 * {@link isPastDeadline}) is not started: `expired`.
 */
export async function startJob(
  store: JobStore,
  job: JobRequest,
  options: { firstDelivery: boolean; maxInterruptions: number; deadlineMs?: number | undefined; now?: number },
): Promise<StartOutcome> {
  const now = options.now ?? Date.now();
  if (options.firstDelivery && !isPastDeadline(job, 0, options.deadlineMs, now)) {
    // Owner and fingerprint come from the envelope, so every record of the job carries them.
    const base = { id: job.id, route: job.route, createdAt: job.createdAt, updatedAt: now, ...keptOf(job) };
    const record: JobRecord = { ...base, status: JobStatus.Running, attempts: 1, failures: 0, interruptions: 0, ...requestedCallback(job) };
    const revision = await create(store, record);
    if (revision !== undefined) return { kind: "started", tracked: { record, revision } };
  }
  const opened = await openJob(store, job, { countInterruption: true, now });
  if (opened.kind === "final") {
    // Its previous worker wrote the final record and died before acking: what that write set going may not have gone.
    await observed(store, opened.record, true);
    return opened;
  }
  const { tracked } = opened;
  const interruptions = tracked.record.interruptions ?? 0;
  if (interruptions >= options.maxInterruptions) return { kind: "poison", tracked, interruptions };
  if (isPastDeadline(job, tracked.record.attempts, options.deadlineMs, now)) return { kind: "expired", tracked };
  const started = await advance(store, tracked, (r) => ({ ...r, status: JobStatus.Running, attempts: r.attempts + 1 }));
  return started ? { kind: "started", tracked } : { kind: "lost" };
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
  return advance(store, tracked, (record) => ({
    ...record,
    status: JobStatus.Completed,
    updatedAt: now,
    expiresAt: now + outcome.ttlMs,
    history: withAttempt(record.history, outcome.call),
    response: outcome.response,
    ...pendingCallback(record),
  }));
}

/** → failed (attempts exhausted, response too large, poison, past its deadline, unusable request): final, kept `ttlMs`. */
export function failJob(
  store: JobStore,
  tracked: TrackedJob,
  failure: { error: JobFailure; ttlMs: number; call?: AttemptRecord; countFailure?: boolean; now?: number },
): Promise<boolean> {
  const now = failure.now ?? Date.now();
  return advance(store, tracked, (record) => ({
    ...record,
    status: JobStatus.Failed,
    updatedAt: now,
    expiresAt: now + failure.ttlMs,
    error: failure.error,
    ...(failure.call ? { history: withAttempt(record.history, failure.call) } : {}),
    ...(failure.countFailure ? { failures: (record.failures ?? 0) + 1 } : {}),
    ...pendingCallback(record),
  }));
}

/** running → queued after a failed call that counts against the route's attempts; the message is nak'ed next. */
export function retryLater(store: JobStore, tracked: TrackedJob, failure: { error: JobFailure; call: AttemptRecord }): Promise<boolean> {
  return advance(store, tracked, (record) => ({
    ...record,
    status: JobStatus.Queued,
    updatedAt: Date.now(),
    error: failure.error,
    failures: (record.failures ?? 0) + 1,
    history: withAttempt(record.history, failure.call),
  }));
}

/**
 * running → queued without counting the start: the call was cut short by us (a shutdown, a store
 * write that failed), or found the backend already known to be down (the route's circuit is
 * open), not by the job. `error`, when given, says why the job waits. Only while the record says
 * `running`: once it is final the job is done and must stay so.
 */
export function handBack(
  store: JobStore,
  tracked: TrackedJob,
  call: Omit<AttemptRecord, "attempt" | "startedAt">,
  error?: JobFailure,
): Promise<boolean> {
  return advance(store, tracked, (record) => {
    if (record.status !== JobStatus.Running) return undefined;
    const entry: AttemptRecord = { attempt: record.attempts, startedAt: record.updatedAt, ...call };
    return {
      ...record,
      status: JobStatus.Queued,
      attempts: record.attempts - 1,
      updatedAt: Date.now(),
      history: withAttempt(record.history, entry),
      ...(error ? { error } : {}),
    };
  });
}

/**
 * running → running, the same record written again. The jobs bucket expires records by age (its
 * `max_age`, from the routes' ttl + timeout): a call that runs longer than a reload made that age,
 * or a result write retried for long, keeps its record this way. False when there was nothing to
 * touch (no longer running) or someone else wrote the record.
 */
export function touchRunning(store: JobStore, tracked: TrackedJob): Promise<boolean> {
  return advance(store, tracked, (record) => (record.status === JobStatus.Running ? record : undefined), { observe: false });
}


/**
 * Tells the observer of a cancel. The cancel itself has happened: an observer that fails (it logs)
 * must not turn it into an error, or the client's retry of the DELETE would delete the job.
 */
async function observedCancel(store: JobStore, record: JobRecord, revision: number | undefined): Promise<number | undefined> {
  if (revision !== undefined) await observed(store, record).catch(() => undefined);
  return revision;
}

/** A job's record (queued or running) → canceled; resolves to the new revision, or `undefined` if it changed meanwhile. */
export async function cancelRecord(store: JobStore, found: VersionedRecord, ttlMs: number, now = Date.now()): Promise<number | undefined> {
  const record: JobRecord = { ...found.record, status: JobStatus.Canceled, updatedAt: now, expiresAt: now + ttlMs, ...pendingCallback(found.record) };
  return observedCancel(store, record, await store.writeRecord(record, found.revision));
}

/** A job nobody started (no record) → canceled: the record a worker that pulls its message obeys. */
export async function cancelUnstarted(store: JobStore, request: JobRequest, ttlMs: number, now = Date.now()): Promise<number | undefined> {
  const record: JobRecord = { ...toQueuedView(request), status: JobStatus.Canceled, updatedAt: now, expiresAt: now + ttlMs };
  return observedCancel(store, record, await store.writeRecord(record, 0));
}

/**
 * failed → queued for `slowlane jobs retry`: a clean slate of failures, error and expiry cleared,
 * attempts kept for the history, `retries` + 1. `undefined` when the record changed since read.
 */
export async function requeueFailed(store: JobStore, found: VersionedRecord, now = Date.now()): Promise<TrackedJob | undefined> {
  const { error: _error, expiresAt: _expiresAt, ...kept } = found.record;
  const retries = (found.record.retries ?? 0) + 1;
  const record: JobRecord = { ...kept, status: JobStatus.Queued, failures: 0, retries, updatedAt: now, ...pendingCallback(found.record) };
  const revision = await store.writeRecord(record, found.revision);
  if (revision === undefined) return undefined;
  await observed(store, record);
  return { record, revision };
}

/** Undoes {@link requeueFailed} when the requeue could not be published; false when a worker wrote meanwhile. */
export async function restoreFailed(store: JobStore, failed: JobRecord, requeued: TrackedJob): Promise<boolean> {
  if ((await store.writeRecord(failed, requeued.revision)) === undefined) return false;
  await observed(store, failed);
  return true;
}

/** Tries of a callback-state write that keeps losing its compare-and-set. */
const CALLBACK_WRITE_TRIES = 3;

/**
 * Records how a job's callback delivery went, on the final record it was for (`finalAt`: that
 * record's `updatedAt`). Not a transition: the status stays and no observer is told. False when the
 * record is gone, has moved on (requeued, or final again since), or kept changing.
 */
export async function recordCallback(
  store: JobStore,
  id: string,
  finalAt: number,
  state: Pick<CallbackState, "status" | "attempts" | "lastError">,
): Promise<boolean> {
  for (let i = 0; i < CALLBACK_WRITE_TRIES; i++) {
    const found = await store.readRecord(id);
    const callback = found?.record.callback;
    if (!found || !callback || !isFinal(found.record) || found.record.updatedAt !== finalAt) return false;
    const next: CallbackState = {
      url: callback.url,
      status: state.status,
      attempts: state.attempts,
      ...(state.lastError === undefined ? {} : { lastError: state.lastError }),
    };
    if ((await store.writeRecord({ ...found.record, callback: next }, found.revision)) !== undefined) return true;
  }
  return false;
}
