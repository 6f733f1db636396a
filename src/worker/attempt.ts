/**
 * One delivery of a job to this worker: start it (record `running`), call the backend while
 * heartbeating the message, store the response, then move the job on (completed, retry later,
 * failed) and only then ack, nak or terminate the message.
 *
 * Invariants (the fault suite relies on them):
 * - The record is written before the message is acked or terminated, so a job is never gone from
 *   both the stream and the jobs bucket (the proxy's lookup relies on it).
 * - Every record write is a compare-and-set (`jobs/transitions.ts`): a job canceled meanwhile is
 *   never overwritten with a result; a lost compare-and-set is handled by `settleLost`, and a
 *   record found gone is written again (`writeRecord` in `settle.ts`).
 * - While a call runs, the message is heartbeated (`working()`) every third of AckWait (as it is
 *   at each tick: a reload may lower it), so a long call is not redelivered; if this process dies,
 *   heartbeats stop and another worker gets the message after AckWait. The record is touched
 *   before it can age out of the jobs bucket.
 * - A failed job's request goes to the dead-letter stream before its record says `failed`, then
 *   its message is terminated: never redelivered forever.
 * - Once the backend has answered, the answer is not lost to a store write that fails: the write
 *   is retried with backoff while the message is heartbeated, never by calling the backend again
 *   (a body streamed to the Object Store, which cannot be kept, is the one exception).
 * - While the route's circuit is open, jobs are held back uncounted (`settle.ts` `holdBack`), one
 *   call at a time probes the backend, and an unreachable backend costs a job nothing.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { JsMsg } from "@nats-io/jetstream";
import type { RouteConfig } from "../config/index.js";
import {
  BackendStatusError,
  BackendTimeoutError,
  BackendUnreachableError,
  DeadlineExceededError,
  JobInterruptedError,
  RequestBodyMissingError,
  ResponseTooLargeError,
  StoredRequestInvalidError,
} from "../errors.js";
import { sendThisTurn } from "../nats/outbox.js";
import { SealError } from "../security/seal.js";
import type { JobRequest } from "../jobs/envelope.js";
import { JobStatus } from "../jobs/record.js";
import type { AttemptRecord } from "../jobs/record.js";
import { completeJob, handBack, retryLater, startJob, touchRunning } from "../jobs/transitions.js";
import { backoffDelayMs, parseRetryAfterMs, retryDelayMs } from "../shared/retry-policy.js";
import { callBackend, describeNetworkError } from "./backend-call.js";
import { endAttemptTrace, endBackendCallTrace, startAttemptTrace, startBackendCallTrace, withJobTrace } from "./attempt-trace.js";
import { startHeartbeat } from "./heartbeat.js";
import { toBackendUrl } from "./request-check.js";
import { ResultStreamError, storeResponseBody } from "./response-body.js";
import type { KeepWriting } from "./response-body.js";
import { GiveBackError } from "./run.js";
import type { AttemptDeps, CallControl, Run } from "./run.js";
import { deleteStoredRequest, fail, holdBack, settleFinal, settleLost, toFailure, writeRecord } from "./settle.js";

export type { AttemptDeps, CallControl } from "./run.js";

/**
 * Starts of one job that ended without an outcome (the worker crashed, was killed, or lost NATS
 * mid-call: the next start finds the record still `running`) before the job is failed as poison.
 */
export const MAX_INTERRUPTIONS = 5;

/** Why a running call was aborted. */
export const AbortReason = { Shutdown: "shutdown", Canceled: "canceled" } as const;
export type AbortReason = (typeof AbortReason)[keyof typeof AbortReason];

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
  if (err instanceof StoredRequestInvalidError) return "invalid";
  if (err instanceof SealError) return "unreadable";
  return "error";
}

/** What went wrong in full, for the log: the network error behind an unreachable backend (its address included). */
function detailOf(err: unknown): string | undefined {
  return err instanceof BackendUnreachableError && err.cause instanceof Error ? describeNetworkError(err.cause) : undefined;
}

/** Records `running`; or deals with the message (canceled, finished, poison, past its deadline, lost) and returns `undefined`. */
async function begin(deps: AttemptDeps, job: JobRequest, route: RouteConfig, msg: JsMsg): Promise<Run | undefined> {
  const firstDelivery = msg.info.deliveryCount === 1;
  const start = await startJob(deps.store, job, { firstDelivery, maxInterruptions: MAX_INTERRUPTIONS, deadlineMs: route.deadlineMs });
  const run = (tracked: Run["tracked"]): Run => ({ deps, msg, job, route, tracked, writtenAt: Date.now() });
  switch (start.kind) {
    case "started":
      return run(start.tracked);
    case "final":
      await settleFinal(deps, job, msg, start.record);
      return undefined;
    case "poison":
      await fail(run(start.tracked), new JobInterruptedError(start.interruptions));
      return undefined;
    case "expired":
      await fail(run(start.tracked), new DeadlineExceededError(route.deadlineMs ?? 0));
      return undefined;
    case "lost":
      await settleLost({ deps, msg, job, route });
      return undefined;
  }
}

/**
 * Writes of the result after the backend answered: each is tried until it succeeds, with the
 * route's backoff between tries, and counted; only an abort (shutdown, cancel) stops it.
 */
function keepWriting(run: Run, signal: AbortSignal): KeepWriting {
  return async (what, write) => {
    for (let failures = 1; ; failures++) {
      try {
        return await write();
      } catch (err) {
        if (signal.aborted) throw err;
        const retryInMs = retryDelayMs(failures + 1, run.route.backoff);
        run.deps.observer?.resultStoreFailed?.(run.route.name);
        run.deps.log.warn({ job: run.job.id, route: run.route.name, err, what, failures, retryInMs }, "storing the result failed; retrying the write, not the call");
        await sleep(retryInMs, undefined, { signal });
      }
    }
  };
}

/** Whether the record says completed at `finishedAt`: a write that timed out after all, then lost its retry's compare-and-set to itself. */
async function isCompletedAt(run: Run, finishedAt: number): Promise<boolean> {
  const current = (await run.deps.store.readRecord(run.job.id))?.record;
  return current?.status === JobStatus.Completed && current.updatedAt === finishedAt;
}

/** The call itself: body, backend, `retryOn`, response body into the store. Resolves once the job is completed. */
async function callAndComplete(run: Run, control: CallControl): Promise<string> {
  const { deps, job, route, msg, tracked } = run;
  const { signal } = control.abort;
  const body = await deps.store.openRequestBody(job, msg.data);
  if (body === undefined) throw new RequestBodyMissingError();
  const upstream = toBackendUrl(deps.backendUrl(), job);
  const trace = startBackendCallTrace(run, upstream)?.context;
  control.gate.calling();
  const res = await callBackend({ agent: deps.agent, url: upstream, request: job, body, timeoutMs: route.timeoutMs, signal, trace });
  control.gate.answered();
  if (route.retryOn.includes(res.status)) {
    res.discard();
    throw new BackendStatusError(res.status, parseRetryAfterMs(res.status, res.header("retry-after")));
  }
  const keep = keepWriting(run, signal);
  const stored = await storeResponseBody(deps.store, job.id, res, route.maxResponseBytes, keep);
  endBackendCallTrace(run, { outcome: String(res.status), status: res.status });
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
  const completion = { response, call, ttlMs: route.ttlMs, now: finishedAt };
  const completed = await keep("the completed record", () => writeRecord(run, () => completeJob(deps.store, tracked, completion)));
  if (!completed && !(await isCompletedAt(run, finishedAt))) {
    await settleLost(run);
    return outcome;
  }
  // A plain ack, not one awaiting the server's confirmation: the record already says completed, so an
  // ack that got lost only brings the message back to a worker that finds the job final and acks it.
  await sendThisTurn(() => msg.ack());
  await deleteStoredRequest(deps.store, job);
  deps.log.info({ job: job.id, route: route.name, attempt: call.attempt, durationMs: call.durationMs, responseStatus: res.status, bodyBytes: stored.bytes }, "job completed");
  deps.observer?.jobFinished?.(route.name, JobStatus.Completed);
  return outcome;
}

/** A failed call that counts: nak with the route's backoff, or fail the job once its attempts are spent. */
async function retryOrFail(run: Run, err: RetryableError, call: AttemptRecord): Promise<void> {
  const { deps, job, route, msg, tracked } = run;
  const detail = detailOf(err);
  const failures = (tracked.record.failures ?? 0) + 1;
  if (failures >= route.attempts) return fail(run, err, { call, countFailure: true, ...(detail ? { detail } : {}) });
  const retryAfterMs = err instanceof BackendStatusError ? err.retryAfterMs : undefined;
  const delayMs = retryDelayMs(failures + 1, route.backoff, retryAfterMs);
  if (!(await writeRecord(run, () => retryLater(deps.store, tracked, { error: toFailure(err), call })))) return settleLost(run);
  msg.nak(delayMs);
  const { attempts, error } = tracked.record;
  deps.log.warn({ job: job.id, route: route.name, attempt: attempts, durationMs: call.durationMs, error, detail, retryInMs: delayMs }, "attempt failed");
}

/**
 * The backend could not be reached. The call that opens the route's circuit counts like any failed
 * call; one that finds it open already (the probe, or calls that were running when it opened)
 * costs the job nothing: it goes back to the queue until about the next probe.
 */
async function settleUnreachable(run: Run, err: BackendUnreachableError, call: AttemptRecord, control: CallControl): Promise<void> {
  const detail = detailOf(err) ?? err.message;
  if (!control.gate.unreachable(detail)) return retryOrFail(run, err, call);
  const { deps, job, route, msg, tracked } = run;
  const delayMs = control.gate.holdDelayMs();
  const uncounted = { durationMs: call.durationMs, outcome: call.outcome };
  if (!(await writeRecord(run, () => handBack(deps.store, tracked, uncounted, toFailure(err))))) return settleLost(run);
  msg.nak(delayMs);
  deps.log.info({ job: job.id, route: route.name, detail, retryInMs: delayMs }, "backend unreachable while the route is paused: the job waits, not counted");
}

/**
 * Decides what a call that threw means. Rethrows when the message must go back to the queue
 * untouched (a shutdown, or our own trouble such as a NATS write that failed): the caller naks it.
 */
async function settleError(run: Run, err: unknown, control: CallControl): Promise<void> {
  const { signal } = control.abort;
  const startedAt = run.tracked.record.updatedAt;
  const durationMs = Date.now() - startedAt;
  if (signal.aborted) {
    if (signal.reason === AbortReason.Canceled) return settleLost(run);
    // Shutdown: not the job's fault, so it does not count as a start.
    await handBack(run.deps.store, run.tracked, { durationMs, outcome: "aborted" });
    throw err;
  }
  const call: AttemptRecord = { attempt: run.tracked.record.attempts, startedAt, durationMs, outcome: outcomeOf(err) };
  if (err instanceof BackendUnreachableError) return settleUnreachable(run, err, call, control);
  if (isRetryable(err)) return retryOrFail(run, err, call);
  if (err instanceof ResponseTooLargeError || err instanceof RequestBodyMissingError || err instanceof SealError) return fail(run, err, { call });
  if (err instanceof StoredRequestInvalidError) return fail(run, err);
  // Not the job's fault either. If NATS takes the write, the next start does not count this one as an interruption.
  await handBack(run.deps.store, run.tracked, { durationMs, outcome: "error" }).catch(() => undefined);
  if (!(err instanceof ResultStreamError)) throw err;
  // The backend answered, but its streamed body could not be stored: the next call waits a backoff, not a second.
  run.deps.observer?.resultStoreFailed?.(run.route.name);
  const delayMs = backoffDelayMs(run.msg.info.deliveryCount + 1, run.route.backoff);
  throw new GiveBackError(delayMs, "storing the streamed response body failed; the job goes back to the queue", { cause: err });
}

/** Writes the record again when it is old enough to age out of the jobs bucket before the call ends. */
async function refreshRecord(run: Run): Promise<void> {
  if (Date.now() - run.writtenAt < run.deps.recordRefreshMs()) return;
  try {
    await writeRecord(run, () => touchRunning(run.deps.store, run.tracked));
  } catch (err) {
    run.deps.log.debug({ err, job: run.job.id }, "touching a running job's record failed; the next tick tries again");
  }
}

/**
 * Runs one delivery of a job. Resolves when the message has been acked, nak'ed or terminated;
 * rejects when it must be handed back to the queue as it is (the caller naks it).
 */
export async function runAttempt(deps: AttemptDeps, job: JobRequest, route: RouteConfig, msg: JsMsg, control: CallControl): Promise<void> {
  const traced = withJobTrace(deps, job);
  if (control.gate.admission.kind === "hold") return holdBack(traced, job, route, msg, control.gate);
  const begun = await begin(traced, job, route, msg);
  if (!begun) return;
  const run = startAttemptTrace(begun, deps);
  const { attempts: attempt, updatedAt: startedAt } = run.tracked.record;
  run.deps.log.info({ job: job.id, route: route.name, attempt, redelivered: msg.redelivered, probe: control.gate.admission.kind === "probe" }, "job started");
  deps.observer?.jobStarted?.(route.name, attempt, msg.redelivered);
  const heartbeat = startHeartbeat({ msg, periodMs: () => deps.heartbeatMs(), onTick: () => refreshRecord(run) });
  control.refresh = () => heartbeat.beat();
  // Reported once per started call, however it ends (`error`: our own trouble, e.g. a store write failed).
  let outcome = "error";
  let error: unknown;
  try {
    outcome = await callAndComplete(run, control);
  } catch (err) {
    error = err;
    outcome = control.abort.signal.aborted ? "aborted" : outcomeOf(err);
    endBackendCallTrace(run, { outcome, error: err, ...(err instanceof BackendStatusError ? { status: err.backendStatus } : {}) });
    await settleError(run, err, control);
  } finally {
    heartbeat.stop();
    control.refresh = undefined;
    deps.observer?.callFinished?.(route.name, outcome, Date.now() - startedAt);
    endAttemptTrace(run, outcome, error);
  }
}
