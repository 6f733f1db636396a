/**
 * How a delivery ends other than with a completed call: the job failed (dead letter first, then
 * the record, then the message terminated), someone else moved the job (a cancel, another worker),
 * the job is final already, the route is paused (the message goes back for a while), or the
 * request cannot be sent at all.
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { RouteConfig } from "../config/index.js";
import { BackendStatusError, DeadlineExceededError, StoredRequestInvalidError } from "../errors.js";
import type { SlowlaneError } from "../errors.js";
import { putDeadLetter } from "../jobs/dead-letters.js";
import type { JobRequest } from "../jobs/envelope.js";
import { JobStatus } from "../jobs/record.js";
import type { AttemptRecord, JobFailure, JobRecord } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { failJob, forgetRevision, isPastDeadline, openJob } from "../jobs/transitions.js";
import type { CallGate } from "./circuit-board.js";
import type { AttemptDeps, Run } from "./run.js";

/** Wait before a job whose record could not be written (not even again) is delivered again. */
const LOST_RECORD_RETRY_MS = 1_000;

export function toFailure(err: SlowlaneError): JobFailure {
  return err instanceof BackendStatusError
    ? { code: err.code, message: err.message, upstreamStatus: err.backendStatus }
    : { code: err.code, message: err.message };
}

/**
 * Takes a message out of the work queue for good. Always without a reason: nats-server 2.9 takes
 * only a bare `+TERM`, and silently ignores `+TERM <reason>` (the message would be redelivered).
 */
export function terminate(msg: JsMsg): void {
  msg.term();
}

/** Deletes a claim-checked request body once the job no longer needs it. */
export async function deleteStoredRequest(store: JobStore, job: JobRequest): Promise<void> {
  if (job.storedBody) await store.deleteRequestBody(job.storedBody.name);
}

/**
 * Runs a record write of this run. When it loses its compare-and-set because the record is gone
 * (aged out of the bucket, deleted by hand) rather than changed by someone else, the record is
 * written again from what this worker knows: it holds the job's message, so nobody else is
 * working the job, and the create still loses to anyone who recreated it first.
 */
export async function writeRecord(run: Run, write: () => Promise<boolean>): Promise<boolean> {
  if (await write()) return (run.writtenAt = Date.now()), true;
  if ((await run.deps.store.readRecord(run.job.id)) !== undefined) return false;
  run.deps.log.warn({ job: run.job.id, route: run.route.name }, "the job's record was gone mid-run (aged out or deleted); writing it again");
  forgetRevision(run.tracked);
  if (await write()) return (run.writtenAt = Date.now()), true;
  return false;
}

/**
 * Someone else wrote the record since this worker did. Usually a cancel: drop the message and what
 * was stored. Or a redelivery of the same message to another worker (this one's heartbeats did not
 * get through): that run owns the job now, so leave everything to it. A record that is gone even
 * after {@link writeRecord} tried to write it again sends the message back to the queue, where the
 * next start writes a new one.
 */
export async function settleLost(run: Pick<Run, "deps" | "job" | "route" | "msg">): Promise<void> {
  const { deps, job, route, msg } = run;
  const current = (await deps.store.readRecord(job.id))?.record;
  if (current === undefined) {
    deps.log.warn({ job: job.id, route: route.name }, "the job's record is gone and could not be written again; the job goes back to the queue");
    msg.nak(LOST_RECORD_RETRY_MS);
    return;
  }
  if (current.status !== JobStatus.Canceled) {
    deps.log.warn({ job: job.id, route: route.name, status: current.status }, "another worker took the job over; leaving it to it");
    return;
  }
  terminate(msg);
  await Promise.all([deps.store.deleteResponse(job.id), deleteStoredRequest(deps.store, job)]);
  deps.log.info({ job: job.id, route: route.name }, "job canceled; its result is not kept");
  deps.observer?.jobFinished?.(route.name, JobStatus.Canceled);
}

/** How a failure is recorded: the call that ended it (if any), whether it counts, and the detail kept for the log only. */
export interface FailOptions {
  call?: AttemptRecord;
  countFailure?: boolean;
  /** What went wrong in full (addresses, error codes): logged, never stored where clients read it. */
  detail?: string;
}

export async function fail(run: Run, err: SlowlaneError, options: FailOptions = {}): Promise<void> {
  const { deps, job, route, msg, tracked } = run;
  // The dead letter first: a failed record always has a request that `slowlane jobs retry` can requeue.
  await putDeadLetter(deps.store.context, job, msg);
  const failure = { error: toFailure(err), ttlMs: route.ttlMs, countFailure: options.countFailure ?? false, ...(options.call ? { call: options.call } : {}) };
  if (!(await writeRecord(run, () => failJob(deps.store, tracked, failure)))) return settleLost(run);
  terminate(msg);
  const { attempts, error } = tracked.record;
  deps.log.warn({ job: job.id, route: route.name, attempts, error, ...(options.detail ? { detail: options.detail } : {}) }, "job failed");
  deps.observer?.jobFinished?.(route.name, JobStatus.Failed);
}

/** A delivery of a job that is final already: canceled before it started, or finished but its ack was lost. */
export async function settleFinal(deps: AttemptDeps, job: JobRequest, msg: JsMsg, record: JobRecord): Promise<void> {
  if (record.status === JobStatus.Canceled) {
    terminate(msg);
    await deleteStoredRequest(deps.store, job);
  } else await msg.ackAck();
}

/** Fails a job without calling the backend, from whatever record it has (none, queued, running elsewhere). */
async function failUncalled(deps: AttemptDeps, job: JobRequest, route: RouteConfig, msg: JsMsg, err: SlowlaneError): Promise<void> {
  const opened = await openJob(deps.store, job);
  if (opened.kind === "final") return settleFinal(deps, job, msg, opened.record);
  await fail({ deps, msg, job, route, tracked: opened.tracked, writtenAt: 0 }, err);
}

/**
 * The route is paused (its circuit is open in this process): the job is not started, and its
 * message goes back to the queue for a while, nothing counted. Its deadline still holds: a job
 * that has waited past it before any call is failed now.
 */
export async function holdBack(deps: AttemptDeps, job: JobRequest, route: RouteConfig, msg: JsMsg, gate: CallGate): Promise<void> {
  // Cheap first: only a job old enough can be past its deadline; its record then says whether it had a call.
  if (isPastDeadline(job, 0, route.deadlineMs)) {
    const opened = await openJob(deps.store, job);
    if (opened.kind === "final") return settleFinal(deps, job, msg, opened.record);
    if (isPastDeadline(job, opened.tracked.record.attempts, route.deadlineMs)) {
      return fail({ deps, msg, job, route, tracked: opened.tracked, writtenAt: 0 }, new DeadlineExceededError(route.deadlineMs ?? 0));
    }
  }
  const delayMs = gate.holdDelayMs();
  msg.nak(delayMs);
  deps.log.debug({ job: job.id, route: route.name, retryInMs: delayMs }, "route paused (backend unreachable): job held back");
}

/** What the queue holds for the job cannot be sent: fail it to the dead letters, the backend never called. */
export async function rejectRequest(deps: AttemptDeps, job: JobRequest, route: RouteConfig, msg: JsMsg, reason: string): Promise<void> {
  deps.log.error({ job: job.id, route: route.name, subject: msg.subject, seq: msg.seq, reason }, "the queued request cannot be sent; failing the job");
  await failUncalled(deps, job, route, msg, new StoredRequestInvalidError(reason));
}
