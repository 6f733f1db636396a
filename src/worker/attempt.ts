/**
 * One delivery of a job to this worker: start it (record `running`), call the backend while
 * heartbeating the message, store the response, then move the job on (completed, retry later,
 * failed) and only then ack, nak or terminate the message.
 *
 * Invariants (the fault suite relies on them):
 * - The record is written before the message is acked or terminated, so a job is never gone from
 *   both the stream and the jobs bucket (the proxy's lookup relies on it).
 * - Every record write is a compare-and-set (`jobs/transitions.ts`): a job canceled meanwhile is
 *   never overwritten with a result; a lost compare-and-set is handled by {@link settleLost}.
 * - While a call runs, the message is heartbeated (`working()`) every third of AckWait, so a long
 *   call is not redelivered; if this process dies, heartbeats stop and another worker gets the
 *   message after AckWait.
 * - A failed job's request goes to the dead-letter stream before its record says `failed`, then
 *   its message is terminated: never redelivered forever.
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { Agent } from "undici";
import type { RouteConfig } from "../config/index.js";
import {
  BackendStatusError,
  BackendTimeoutError,
  BackendUnreachableError,
  JobInterruptedError,
  RequestBodyMissingError,
  ResponseTooLargeError,
} from "../errors.js";
import type { SlowlaneError } from "../errors.js";
import type { Logger } from "../log.js";
import { putDeadLetter } from "../jobs/dead-letters.js";
import type { JobRequest } from "../jobs/envelope.js";
import { JobStatus } from "../jobs/record.js";
import type { AttemptRecord, JobFailure } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { completeJob, failJob, handBack, noteAttemptTrace, retryLater, startJob } from "../jobs/transitions.js";
import type { TrackedJob } from "../jobs/transitions.js";
import { carrierFromHeaders, endSpan, fromCarrier, logFields, startAttemptSpan, startClientSpan, toCarrier } from "../tracing/index.js";
import type { TracedSpan, Tracing } from "../tracing/index.js";
import { callBackend } from "./backend-call.js";
import type { BackendResponse } from "./backend-call.js";
import type { ForwarderObserver } from "./observer.js";
import { storeResponseBody } from "./response-body.js";
import type { StoredBody } from "./response-body.js";
import { parseRetryAfterMs, retryDelayMs } from "../shared/retry-policy.js";

/**
 * Starts of one job that ended without an outcome (the worker crashed, was killed, or lost NATS
 * mid-call: the next start finds the record still `running`) before the job is failed as poison.
 */
export const MAX_INTERRUPTIONS = 5;

/** Why a running call was aborted. */
export const AbortReason = { Shutdown: "shutdown", Canceled: "canceled" } as const;
export type AbortReason = (typeof AbortReason)[keyof typeof AbortReason];

/** What one attempt needs from the forwarder that runs it. */
export interface AttemptDeps {
  readonly store: JobStore;
  readonly log: Logger;
  readonly agent: Agent;
  readonly observer: ForwarderObserver | undefined;
  readonly tracing: Tracing;
  /** The backend's base URL in force now (it may change on reload). */
  backendUrl(): string;
  /** How often to heartbeat a running call's message, in ms (a third of the consumer's AckWait). */
  heartbeatMs(): number;
}

/** One job's run on this worker: the message, the job, its route's settings and the record as last written. */
interface Run {
  readonly deps: AttemptDeps;
  readonly msg: JsMsg;
  readonly job: JobRequest;
  readonly route: RouteConfig;
  readonly tracked: TrackedJob;
  /** The attempt's span, when tracing is on (`deps.log` then carries its ids). */
  readonly trace?: TracedSpan;
}

/** A failure that counts against the route's attempts. */
type RetryableError = BackendTimeoutError | BackendUnreachableError | BackendStatusError;

function isRetryable(err: unknown): err is RetryableError {
  return err instanceof BackendTimeoutError || err instanceof BackendUnreachableError || err instanceof BackendStatusError;
}

/** How a call ended, as the record's history and the metrics name it. */
function outcomeOf(err: unknown): string {
  if (err instanceof BackendStatusError) return String(err.backendStatus);
  if (err instanceof BackendTimeoutError) return "timeout";
  if (err instanceof BackendUnreachableError) return "unreachable";
  if (err instanceof ResponseTooLargeError) return "too_large";
  if (err instanceof RequestBodyMissingError) return "body_missing";
  return "error";
}

function toFailure(err: SlowlaneError): JobFailure {
  return err instanceof BackendStatusError
    ? { code: err.code, message: err.message, upstreamStatus: err.backendStatus }
    : { code: err.code, message: err.message };
}

/**
 * Takes a message out of the work queue for good. Always without a reason: nats-server 2.9 takes
 * only a bare `+TERM`, and silently ignores `+TERM <reason>` (the message would be redelivered).
 */
function terminate(msg: JsMsg): void {
  msg.term();
}

/** Deletes a claim-checked request body once the job no longer needs it. */
async function deleteStoredRequest(store: JobStore, job: JobRequest): Promise<void> {
  if (job.storedBody) await store.deleteRequestBody(job.storedBody.name);
}

/**
 * Someone else wrote the record since this worker did. Usually a cancel: drop the message and what
 * was stored. Or a redelivery of the same message to another worker (this one's heartbeats did not
 * get through): that run owns the job now, so leave everything to it.
 */
async function settleLost(run: Pick<Run, "deps" | "job" | "route" | "msg">): Promise<void> {
  const { deps, job, route, msg } = run;
  const current = (await deps.store.readRecord(job.id))?.record;
  if (current?.status !== JobStatus.Canceled) {
    deps.log.warn({ job: job.id, route: route.name, status: current?.status ?? "missing" }, "another worker took the job over; leaving it to it");
    return;
  }
  terminate(msg);
  await Promise.all([deps.store.deleteResponse(job.id), deleteStoredRequest(deps.store, job)]);
  deps.log.info({ job: job.id, route: route.name }, "job canceled; its result is not kept");
  deps.observer?.jobFinished?.(route.name, JobStatus.Canceled);
}

async function fail(run: Run, err: SlowlaneError, call?: AttemptRecord, countFailure = false): Promise<void> {
  const { deps, job, route, msg, tracked } = run;
  // The dead letter first: a failed record always has a request that `slowlane jobs retry` can requeue.
  await putDeadLetter(deps.store.context, job, msg);
  const failure = { error: toFailure(err), ttlMs: route.ttlMs, countFailure, ...(call ? { call } : {}) };
  if (!(await failJob(deps.store, tracked, failure))) return settleLost(run);
  terminate(msg);
  const { attempts, error } = tracked.record;
  deps.log.warn({ job: job.id, route: route.name, attempts, error }, "job failed");
  deps.observer?.jobFinished?.(route.name, JobStatus.Failed);
}

/** The attempt's parent: the accept span stored with the job, else the client's own `traceparent`. */
function jobCarrier(job: JobRequest) {
  return job.trace ?? carrierFromHeaders(job.headers);
}

/** With tracing on, `deps` whose logger carries the job's trace (the accept span): for lines before the attempt's span. */
function withJobTrace(deps: AttemptDeps, job: JobRequest): AttemptDeps {
  if (!deps.tracing.enabled) return deps;
  return { ...deps, log: deps.log.child(logFields(fromCarrier(jobCarrier(job)))) };
}

/**
 * Starts the attempt's span: a child of the accept span, linked to the previous attempt's (kept in
 * the record), with the queue wait since enqueue or since the previous attempt ended. Its context
 * goes into the record with the next transition, and its ids onto every log line of the run.
 */
function startTraced(run: Run): Run {
  const { deps, job, route, tracked } = run;
  if (!deps.tracing.enabled) return run;
  const { attempts, history, updatedAt, attemptTrace } = tracked.record;
  const previous = history?.at(-1);
  const waitFrom = previous ? previous.startedAt + previous.durationMs : job.createdAt;
  const info = { route: route.name, jobId: job.id, attempt: attempts, queueWaitMs: Math.max(0, updatedAt - waitFrom) };
  const trace = startAttemptSpan(deps.tracing, jobCarrier(job), attemptTrace ? { ...info, previousAttempt: attemptTrace } : info);
  noteAttemptTrace(tracked, toCarrier(trace.context));
  return { ...run, trace, deps: { ...deps, log: deps.log.child(logFields(trace.span)) } };
}

/** Records `running`; or deals with the message (canceled, finished, poison, lost) and returns `undefined`. */
async function begin(deps: AttemptDeps, job: JobRequest, route: RouteConfig, msg: JsMsg): Promise<Run | undefined> {
  const firstDelivery = msg.info.deliveryCount === 1;
  const start = await startJob(deps.store, job, { firstDelivery, maxInterruptions: MAX_INTERRUPTIONS });
  switch (start.kind) {
    case "started":
      return { deps, msg, job, route, tracked: start.tracked };
    case "final":
      // Canceled before it started, or finished but the ack was lost (crash between the record write and the ack).
      if (start.record.status === JobStatus.Canceled) {
        terminate(msg);
        await deleteStoredRequest(deps.store, job);
      } else await msg.ackAck();
      return undefined;
    case "poison":
      await fail({ deps, msg, job, route, tracked: start.tracked }, new JobInterruptedError(start.interruptions));
      return undefined;
    case "lost":
      await settleLost({ deps, msg, job, route });
      return undefined;
  }
}

/** The call itself: body, backend, `retryOn`, response body into the store. Resolves once the job is completed. */
async function callAndComplete(run: Run, signal: AbortSignal): Promise<string> {
  const { deps, job, route, msg, tracked } = run;
  const body = job.storedBody === undefined ? msg.data : await deps.store.getRequestBody(job.storedBody.name);
  if (body === undefined) throw new RequestBodyMissingError();
  const upstream = deps.backendUrl();
  const client = run.trace && startClientSpan(deps.tracing, run.trace.context, { method: job.method, url: upstream + job.url, route: route.name, jobId: job.id });
  const request = { agent: deps.agent, upstream, request: job, body, timeoutMs: route.timeoutMs, signal, trace: client?.context };
  let res: BackendResponse;
  let stored: StoredBody;
  try {
    res = await callBackend(request);
    if (route.retryOn.includes(res.status)) {
      res.discard();
      throw new BackendStatusError(res.status, parseRetryAfterMs(res.status, res.header("retry-after")));
    }
    stored = await storeResponseBody(deps.store, job.id, res, route.maxResponseBytes);
  } catch (err) {
    if (client) endSpan(client.span, { outcome: outcomeOf(err), error: err, ...(err instanceof BackendStatusError ? { status: err.backendStatus } : {}) });
    throw err;
  }
  if (client) endSpan(client.span, { outcome: String(res.status), status: res.status });
  const startedAt = tracked.record.updatedAt;
  const finishedAt = Date.now();
  const outcome = String(res.status);
  const call = { attempt: tracked.record.attempts, startedAt, durationMs: finishedAt - startedAt, outcome };
  const response = {
    status: res.status,
    headers: res.headers,
    bodyBytes: stored.bytes,
    body: stored.location,
    ...(stored.inline === undefined ? {} : { inline: stored.inline }),
  };
  if (!(await completeJob(deps.store, tracked, { response, call, ttlMs: route.ttlMs, now: finishedAt }))) {
    await settleLost(run);
    return outcome;
  }
  await msg.ackAck();
  await deleteStoredRequest(deps.store, job);
  deps.log.info({ job: job.id, route: route.name, attempt: call.attempt, durationMs: call.durationMs, responseStatus: res.status, bodyBytes: stored.bytes }, "job completed");
  deps.observer?.jobFinished?.(route.name, JobStatus.Completed);
  return outcome;
}

/** A failed call that counts: nak with the route's backoff, or fail the job once its attempts are spent. */
async function retryOrFail(run: Run, err: RetryableError, call: AttemptRecord): Promise<void> {
  const { deps, job, route, msg, tracked } = run;
  const failures = (tracked.record.failures ?? 0) + 1;
  if (failures >= route.attempts) return fail(run, err, call, true);
  const retryAfterMs = err instanceof BackendStatusError ? err.retryAfterMs : undefined;
  const delayMs = retryDelayMs(failures + 1, route.backoff, retryAfterMs);
  if (!(await retryLater(deps.store, tracked, { error: toFailure(err), call }))) return settleLost(run);
  msg.nak(delayMs);
  const { attempts, error } = tracked.record;
  deps.log.warn({ job: job.id, route: route.name, attempt: attempts, durationMs: call.durationMs, error, retryInMs: delayMs }, "attempt failed");
}

/**
 * Decides what a call that threw means. Rethrows when the message must go back to the queue
 * untouched (a shutdown, or our own trouble such as a NATS write that failed): the caller naks it.
 */
async function settleError(run: Run, err: unknown, signal: AbortSignal): Promise<void> {
  const startedAt = run.tracked.record.updatedAt;
  const durationMs = Date.now() - startedAt;
  if (signal.aborted) {
    if (signal.reason === AbortReason.Canceled) return settleLost(run);
    // Shutdown: not the job's fault, so it does not count as a start.
    await handBack(run.deps.store, run.tracked, { durationMs, outcome: "aborted" });
    throw err;
  }
  const call: AttemptRecord = { attempt: run.tracked.record.attempts, startedAt, durationMs, outcome: outcomeOf(err) };
  if (isRetryable(err)) await retryOrFail(run, err, call);
  else if (err instanceof ResponseTooLargeError || err instanceof RequestBodyMissingError) await fail(run, err, call);
  else {
    // Not the job's fault either. If NATS takes the write, the next start does not count this one as an interruption.
    await handBack(run.deps.store, run.tracked, { durationMs, outcome: "error" }).catch(() => undefined);
    throw err;
  }
}

/**
 * Runs one delivery of a job. Resolves when the message has been acked, nak'ed or terminated;
 * rejects when it must be handed back to the queue as it is (the caller naks it).
 */
export async function runAttempt(deps: AttemptDeps, job: JobRequest, route: RouteConfig, msg: JsMsg, abort: AbortController): Promise<void> {
  const begun = await begin(withJobTrace(deps, job), job, route, msg);
  if (!begun) return;
  const run = startTraced({ ...begun, deps });
  const { attempts: attempt, updatedAt: startedAt } = run.tracked.record;
  run.deps.log.info({ job: job.id, route: route.name, attempt, redelivered: msg.redelivered }, "job started");
  deps.observer?.jobStarted?.(route.name, attempt, msg.redelivered);
  const heartbeat = setInterval(() => msg.working(), deps.heartbeatMs());
  // Reported once per started call, however it ends (`error`: our own trouble, e.g. a store write failed).
  let outcome = "error";
  let error: unknown;
  try {
    outcome = await callAndComplete(run, abort.signal);
  } catch (err) {
    error = err;
    outcome = abort.signal.aborted ? "aborted" : outcomeOf(err);
    await settleError(run, err, abort.signal);
  } finally {
    clearInterval(heartbeat);
    deps.observer?.callFinished?.(route.name, outcome, Date.now() - startedAt);
    if (run.trace) endSpan(run.trace.span, error === undefined ? { outcome } : { outcome, error });
  }
}
