/**
 * `slowlane jobs retry`: putting a failed job back in the work queue from its dead letter, in this order:
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
import { JobsCommandError, messageOf } from "../errors.js";
import type { JetStreamContext } from "../nats/context.js";
import { publishCancelNotice } from "./cancel.js";
import { deleteDeadLetter, getDeadLetter, requeueDeadLetter } from "./dead-letters.js";
import type { DeadLetter } from "./dead-letters.js";
import { decodeEnvelope } from "./envelope.js";
import { isJobIdShape } from "./job-id.js";
import { JobStatus } from "./record.js";
import { findQueuedMessage } from "./queue.js";
import { createJobStore } from "./store.js";
import type { JobStore, VersionedRecord } from "./store.js";
import { requeueFailed, restoreFailed } from "./transitions.js";

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

/** The failed record and dead letter of a job that can be retried; throws the reason when it cannot. */
async function checkRetryable(context: JetStreamContext, store: JobStore, id: string): Promise<VersionedRecord & { letter: DeadLetter }> {
  const { names } = context;
  const read = await store.readRecord(id);
  if (!read) {
    const queued = await context.jsm.streams.info(names.stream, { subjects_filter: names.jobOfIdFilter(id) });
    if (Object.keys(queued.state.subjects ?? {}).length > 0) throw new JobsCommandError(`job ${id} is queued (no worker has started it yet), not failed: nothing to retry`);
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
  if (!isJobIdShape(id)) throw new JobsCommandError(`no such job: ${id} (not a job id)`);
  const store = createJobStore(context);
  const { record, revision, letter } = await checkRetryable(context, store, id);

  // 1. The record first: queued, a clean slate of failures, attempts kept for the history.
  const requeued = await requeueFailed(store, { record, revision }, now);
  if (requeued === undefined) {
    throw new JobsCommandError(`job ${id} changed while it was being retried (another retry?); see: slowlane jobs show ${id}`);
  }

  // Proxies cache final records: the notice that makes them forget a canceled job makes them forget
  // the failed one. Sent now, while no worker can be running the job (a worker aborts a running call
  // on this notice), and before the message, so no proxy can cache the failed record again after it.
  publishCancelNotice(context, id);

  // 2. The request back in the work queue. The dead letter's sequence makes the msg id unique per
  // dead letter, so two retries of the same dead letter can never queue the job twice.
  const msgId = `${id}.retry.${letter.seq}`;
  try {
    const ack = await requeueDeadLetter(context, letter, msgId);
    if (ack.duplicate && !(await findQueuedMessage(context, [record.route], id))) {
      throw new JobsCommandError(
        `job ${id}: this dead letter was requeued less than 2 minutes ago and that message is gone; try again in 2 minutes`,
      );
    }
  } catch (err) {
    // Put the failed record back, unless a worker wrote the record meanwhile (the message got through).
    const restored = await restoreFailed(store, record, requeued).then(
      (written) => (written ? "its record is failed again" : "a worker has picked it up meanwhile"),
      (restoreErr: unknown) => `restoring its failed record failed too: ${messageOf(restoreErr)}`,
    );
    if (err instanceof JobsCommandError) throw new JobsCommandError(`${err.message} (${restored})`, { cause: err });
    throw new JobsCommandError(`job ${id} could not be requeued: ${messageOf(err)} (${restored})`, { cause: err });
  }

  // 3. The dead letter, by sequence: a newer one (the job failed again already) stays.
  const warning = await deleteDeadLetter(context, record.route, id, letter.seq).then(
    () => undefined,
    (err: unknown) => `requeued, but its dead letter could not be deleted (it expires by itself): ${messageOf(err)}`,
  );
  return { id, route: record.route, retries: requeued.record.retries ?? 1, msgId, ...(warning ? { warning } : {}) };
}

