/**
 * The work queue: publishing an accepted request, and finding a job that no worker has started
 * yet. The accept path writes only the request message (one persisted write), so a queued job has
 * no record: its message, on its own subject, is the proof that it exists. Workers write the
 * record before they ack, so "no record, no message, and still no record" means the job does not
 * exist.
 */
import type { PubAck } from "@nats-io/jetstream";
import type { JetStreamContext } from "../nats/context.js";
import { sendThisTurn } from "../nats/outbox.js";
import { decodeEnvelope } from "./envelope.js";
import type { JobMessage, JobRequest } from "./envelope.js";

/** How long a publish to JetStream (an accept, a dead letter, a requeue) waits for its acknowledgement. */
export const PUBLISH_TIMEOUT_MS = 5_000;

/** A queued job's request and where its message is in the work-queue stream. */
export interface QueuedMessage {
  readonly request: JobRequest;
  readonly seq: number;
}

/**
 * Publishes an accepted request (`toJobMessage`) to its job's subject and resolves with JetStream's
 * acknowledgement (`duplicate` when a message with this `msgId` was stored within the duplicate
 * window). The same message may be published again under the same `msgId`: JetStream keeps one.
 */
export function publishJob(
  context: Pick<JetStreamContext, "js" | "names">,
  job: Pick<JobRequest, "route" | "id">,
  message: JobMessage,
  msgId: string,
): Promise<PubAck> {
  const subject = context.names.jobSubject(job.route, job.id);
  return sendThisTurn(() => context.js.publish(subject, message.data, { msgID: msgId, headers: message.headers, timeout: PUBLISH_TIMEOUT_MS }));
}

export async function findQueuedMessage(
  context: Pick<JetStreamContext, "jsm" | "names">,
  routes: readonly string[],
  id: string,
): Promise<QueuedMessage | undefined> {
  const { jsm, names } = context;
  // One literal-subject lookup per route, in parallel: each is an index hit on the server, where a
  // wildcard (`<P>.jobs.*.<id>`) would make it scan the subjects of every queued job.
  const found = await Promise.all(routes.map((route) => jsm.streams.getMessage(names.stream, { last_by_subj: names.jobSubject(route, id) })));
  const msg = found.find((m) => m !== null);
  const request = msg ? decodeEnvelope(msg.header) : undefined;
  return msg && request ? { request, seq: msg.seq } : undefined;
}

export async function findQueuedRequest(
  context: Pick<JetStreamContext, "jsm" | "names">,
  routes: readonly string[],
  id: string,
): Promise<JobRequest | undefined> {
  return (await findQueuedMessage(context, routes, id))?.request;
}

/** Removes a queued job's message from the work queue (a cancel); false when it was gone already. */
export function deleteQueuedMessage(context: Pick<JetStreamContext, "jsm" | "names">, seq: number): Promise<boolean> {
  return context.jsm.streams.deleteMessage(context.names.stream, seq, false).catch(() => false);
}
