/**
 * Finding a job that no worker has started yet. The accept path writes only the request message
 * (one persisted write), so a queued job has no record: its message, on its own subject, is the
 * proof that it exists. Workers write the record before they ack, so "no record, no message,
 * and still no record" means the job does not exist.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import { decodeEnvelope } from "./envelope.js";
import type { JobRequest } from "./envelope.js";
import type { JetStreamNames } from "./names.js";

export async function findQueuedRequest(
  jsm: JetStreamManager,
  names: JetStreamNames,
  routes: readonly string[],
  id: string,
): Promise<JobRequest | undefined> {
  for (const route of routes) {
    const msg = await jsm.streams.getMessage(names.stream, { last_by_subj: names.jobSubject(route, id) });
    if (msg) return decodeEnvelope(msg.header);
  }
  return undefined;
}
