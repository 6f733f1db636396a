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
import { SealError } from "../security/seal.js";
import type { JobRequest } from "../jobs/envelope.js";
import { JobStatus } from "../jobs/record.js";
import type { AttemptRecord, JobFailure } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { completeJob, failJob, handBack, retryLater, startJob } from "../jobs/transitions.js";
import type { TrackedJob } from "../jobs/transitions.js";
import { callBackend } from "./backend-call.js";
import type { ForwarderObserver } from "./observer.js";
import { storeResponseBody } from "./response-body.js";
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
  if (err instanceof SealError) return "unreadable";
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
  deps.log.warn({ job: job.id, route: route.name, attempts, error, err }, "job failed");
  deps.observer?.jobFinished?.(route.name, JobStatus.Failed);
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
  const body = await deps.store.openRequestBody(job, msg.data);
  if (body === undefined) throw new RequestBodyMissingError();
  const request = { agent: deps.agent, upstream: deps.backendUrl(), request: job, body, timeoutMs: route.timeoutMs, signal };
  const res = await callBackend(request);
  if (route.retryOn.includes(res.status)) {
    res.discard();
    throw new BackendStatusError(res.status, parseRetryAfterMs(res.status, res.header("retry-after")));
  }
  const stored = await storeResponseBody(deps.store, job.id, res, route.maxResponseBytes);
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
  deps.log.warn({ job: job.id, route: route.name, attempt: attempts, durationMs: call.durationMs, error, err, retryInMs: delayMs }, "attempt failed");
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
  else if (err instanceof ResponseTooLargeError || err instanceof RequestBodyMissingError || err instanceof SealError) await fail(run, err, call);
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
  const run = await begin(deps, job, route, msg);
  if (!run) return;
  const { attempts: attempt, updatedAt: startedAt } = run.tracked.record;
  deps.log.info({ job: job.id, route: route.name, attempt, redelivered: msg.redelivered }, "job started");
  deps.observer?.jobStarted?.(route.name, attempt, msg.redelivered);
  const heartbeat = setInterval(() => msg.working(), deps.heartbeatMs());
  // Reported once per started call, however it ends (`error`: our own trouble, e.g. a store write failed).
  let outcome = "error";
  try {
    outcome = await callAndComplete(run, abort.signal);
  } catch (err) {
    outcome = abort.signal.aborted ? "aborted" : outcomeOf(err);
    await settleError(run, err, abort.signal);
  } finally {
    clearInterval(heartbeat);
    deps.observer?.callFinished?.(route.name, outcome, Date.now() - startedAt);
  }
}
