/**
 * Finding a job that no worker has started yet. The accept path writes only the request message
 * (one persisted write), so a queued job has no record: its message, on its own subject, is the
 * proof that it exists. Workers write the record before they ack, so "no record, no message,
 * and still no record" means the job does not exist.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import { decodeEnvelope } from "./envelope.js";
import type { JobRequest } from "./envelope.js";
import type { JetStreamNames } from "../nats/names.js";

/** A queued job's request and where its message is in the work-queue stream. */
export interface QueuedMessage {
  readonly request: JobRequest;
  readonly seq: number;
}

export async function findQueuedMessage(
  jsm: JetStreamManager,
  names: JetStreamNames,
  routes: readonly string[],
  id: string,
): Promise<QueuedMessage | undefined> {
  // One literal-subject lookup per route, in parallel: each is an index hit on the server, where a
  // wildcard (`<P>.jobs.*.<id>`) would make it scan the subjects of every queued job.
  const found = await Promise.all(
    routes.map((route) => jsm.streams.getMessage(names.stream, { last_by_subj: names.jobSubject(route, id) })),
  );
  const msg = found.find((m) => m !== null);
  const request = msg ? decodeEnvelope(msg.header) : undefined;
  return msg && request ? { request, seq: msg.seq } : undefined;
}

export async function findQueuedRequest(
  jsm: JetStreamManager,
  names: JetStreamNames,
  routes: readonly string[],
  id: string,
): Promise<JobRequest | undefined> {
  return (await findQueuedMessage(jsm, names, routes, id))?.request;
}
