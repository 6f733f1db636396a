/**
 * Dead letters: the request of a job that exhausted its attempts, kept in the dead-letter stream
 * (`<P>_dead`, one message per subject `<P>.dead.<route>.<id>`) until the longest route ttl has
 * passed, so that ops can put it back in the work queue (`slowlane jobs retry`).
 *
 * A dead letter is the original message as it was: the `Slowlane-Request` envelope and any other
 * header, and the body bytes as the payload. JetStream's own `Nats-*` headers are left out: the
 * stored `Nats-Msg-Id` would make the stream drop a second dead letter of the same job (a job that
 * fails again after a retry) as a duplicate.
 */
import { JetStreamApiError } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MsgHdrs } from "@nats-io/transport-node";
import type { JobRequest } from "./envelope.js";
import type { JetStreamContext } from "../nats/context.js";
import { PUBLISH_TIMEOUT_MS } from "./queue.js";


/** A failed job's request, as kept in the dead-letter stream. */
export interface DeadLetter {
  readonly route: string;
  readonly id: string;
  /** Sequence in the dead-letter stream: unique per dead letter, even for the same job. */
  readonly seq: number;
  /** Epoch milliseconds when the worker stored it. */
  readonly deadAt: number;
  /** The original headers, the request envelope included (no `Nats-*` ones). */
  readonly headers: MsgHdrs | undefined;
  /** The request body bytes. */
  readonly data: Uint8Array;
}

/** The message a worker got from the work queue, or a dead letter on its way back. */
export interface RequestMessage {
  readonly headers?: MsgHdrs | undefined;
  readonly data: Uint8Array;
}

/** A copy of a message's headers without JetStream's `Nats-*` ones (msg id, expectations, rollups). */
function toRepublishedHeaders(source: MsgHdrs | undefined): MsgHdrs | undefined {
  if (!source) return undefined;
  const copy = natsHeaders();
  let any = false;
  for (const key of source.keys()) {
    if (key.toLowerCase().startsWith("nats-")) continue;
    for (const value of source.values(key)) copy.append(key, value);
    any = true;
  }
  return any ? copy : undefined;
}

/**
 * Stores a failed job's request in the dead-letter stream, replacing an earlier one of the same job,
 * and resolves once JetStream has acknowledged it. Workers call it before writing the `failed`
 * record and terminating the message, so a failed record always has its dead letter.
 */
export async function putDeadLetter(
  context: Pick<JetStreamContext, "js" | "names">,
  job: Pick<JobRequest, "route" | "id">,
  msg: RequestMessage,
): Promise<void> {
  const headers = toRepublishedHeaders(msg.headers);
  await context.js.publish(context.names.deadSubject(job.route, job.id), msg.data, {
    ...(headers ? { headers } : {}),
    timeout: PUBLISH_TIMEOUT_MS,
  });
}

/** The dead letter of a job, or `undefined` when there is none (never failed, retried, or expired). */
export async function getDeadLetter(
  context: Pick<JetStreamContext, "jsm" | "names">,
  route: string,
  id: string,
): Promise<DeadLetter | undefined> {
  // A literal subject: an index hit on the server (2.9 has no multi-subject last_by_subj anyway).
  const stored = await context.jsm.streams.getMessage(context.names.deadStream, {
    last_by_subj: context.names.deadSubject(route, id),
  });
  if (!stored) return undefined;
  return {
    route,
    id,
    seq: stored.seq,
    deadAt: stored.time.getTime(),
    headers: toRepublishedHeaders(stored.header),
    data: stored.data,
  };
}

/**
 * Removes a job's dead letter; true when there was one. With `seq`, only that dead letter: a newer
 * one of the same job (it failed again after a retry) has replaced it, and is kept.
 */
export async function deleteDeadLetter(
  context: Pick<JetStreamContext, "jsm" | "names">,
  route: string,
  id: string,
  seq?: number,
): Promise<boolean> {
  const { jsm, names } = context;
  if (seq === undefined) {
    const purged = await jsm.streams.purge(names.deadStream, { filter: names.deadSubject(route, id) });
    return purged.purged > 0;
  }
  try {
    return await jsm.streams.deleteMessage(names.deadStream, seq, false);
  } catch (err) {
    // The server answers a missing sequence with a generic "delete failed" code (10057, "no message
    // found" or "stream store EOF"): a failure only if the message is in fact still there.
    if (err instanceof JetStreamApiError && (await jsm.streams.getMessage(names.deadStream, { seq })) === null) return false;
    throw err;
  }
}

/**
 * Publishes a dead letter back to its job's subject in the work queue and resolves with JetStream's
 * acknowledgement. `msgId` must be new: the job's first `Nats-Msg-Id` (its id) may still be in the
 * stream's duplicate window, which would swallow the message. `duplicate` in the answer means a
 * message with this `msgId` was stored less than the duplicate window ago, and this one was not.
 */
export async function requeueDeadLetter(
  context: Pick<JetStreamContext, "js" | "names">,
  letter: DeadLetter,
  msgId: string,
): Promise<{ seq: number; duplicate: boolean }> {
  const ack = await context.js.publish(context.names.jobSubject(letter.route, letter.id), letter.data, {
    msgID: msgId,
    // A fresh copy: nats.js adds the Nats-Msg-Id header to the object it is given.
    headers: toRepublishedHeaders(letter.headers) ?? natsHeaders(),
    timeout: PUBLISH_TIMEOUT_MS,
  });
  return { seq: ack.seq, duplicate: ack.duplicate };
}
