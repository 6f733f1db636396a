/**
 * Canceling a job, or deleting a finished one, from any proxy replica:
 * - a job nobody started gets a `canceled` record (which a worker that pulls the message obeys) and
 *   its message is deleted;
 * - a queued or running one gets its record set to `canceled` by compare-and-set, and a notice
 *   makes the worker running it abort the call;
 * - a finished one loses its record, stored response and dead letter (then 404).
 * Every change is followed by a notice on the job's cancel subject: workers abort, proxies forget
 * the job in their caches.
 */
import type { Subscription } from "@nats-io/transport-node";
import { JobNotFoundError, NatsUnavailableError } from "../errors.js";
import type { JetStreamContext } from "../nats/context.js";
import { deleteDeadLetter, getDeadLetter } from "./dead-letters.js";
import { decodeEnvelope } from "./envelope.js";
import { deleteQueuedMessage, findQueuedMessage } from "./queue.js";
import { JobStatus, isFinal } from "./record.js";
import type { JobRecord } from "./record.js";
import type { JobStore, VersionedRecord } from "./store.js";
import { cancelRecord, cancelUnstarted } from "./transitions.js";

/** Tries of a cancel that keeps losing its compare-and-set to a worker writing the record. */
const CANCEL_TRIES = 5;

export interface CancelOptions {
  /** Routes a queued job may be under (configured ones and any with a consumer). */
  routes: readonly string[];
  /** How long the canceled record of a route's job is kept, in ms. */
  ttlMsOf(route: string): number;
}

/** What a cancel did, for the log. */
export type CancelResult = { readonly route: string; readonly was: JobRecord["status"] | "finished" };

/** Tells every worker and proxy that a job changed under them (core NATS, best effort). */
export function publishCancelNotice(context: Pick<JetStreamContext, "nc" | "names">, id: string): void {
  context.nc.publish(context.names.cancelSubject(id));
}

/** Calls `onNotice(id)` for each cancel notice; the record's compare-and-set is what makes a cancel stick. */
export function subscribeCancelNotices(context: Pick<JetStreamContext, "nc" | "names">, onNotice: (id: string) => void): Subscription {
  return context.nc.subscribe(context.names.cancelFilter, {
    callback: (err, msg) => {
      const id = err ? undefined : context.names.idOfCancelSubject(msg.subject);
      if (id !== undefined) onNotice(id);
    },
  });
}

/** Deletes everything kept of a finished job: its response, its dead letter and claim-checked body, then its record. */
async function deleteFinished(store: JobStore, record: JobRecord): Promise<void> {
  const { context } = store;
  // A failed job's request (and its claim-checked body) waits in the dead-letter stream for a retry.
  const letter = await getDeadLetter(context, record.route, record.id);
  const storedBody = letter ? decodeEnvelope(letter.headers)?.storedBody : undefined;
  await Promise.all([
    store.deleteResponse(record.id),
    storedBody ? store.deleteRequestBody(storedBody.name) : undefined,
    letter ? deleteDeadLetter(context, record.route, record.id) : undefined,
  ]);
  await store.deleteRecord(record.id);
}

/** A queued or running job → canceled; `undefined` when the record changed meanwhile (try again). */
async function cancelTracked(store: JobStore, found: VersionedRecord, options: CancelOptions): Promise<CancelResult | undefined> {
  const { record } = found;
  if ((await cancelRecord(store, found, options.ttlMsOf(record.route))) === undefined) return undefined;
  publishCancelNotice(store.context, record.id);
  if (record.status === JobStatus.Queued) {
    // Waiting between attempts: its message is in the queue, with the name of a claim-checked body.
    // (A running job's worker deletes it once the call is aborted.)
    const queued = await findQueuedMessage(store.context, [record.route], record.id);
    const storedBody = queued?.request.storedBody;
    if (storedBody) await store.deleteRequestBody(storedBody.name);
  }
  return { route: record.route, was: record.status };
}

/** A job no worker has started → canceled; `undefined` when a worker started it meanwhile (try again). */
async function cancelQueued(store: JobStore, id: string, options: CancelOptions): Promise<CancelResult | undefined> {
  const queued = await findQueuedMessage(store.context, options.routes, id);
  if (!queued) {
    // A worker may have started it between the two reads: it writes the record first.
    if (await store.readRecord(id)) return undefined;
    throw new JobNotFoundError();
  }
  const { request } = queued;
  if ((await cancelUnstarted(store, request, options.ttlMsOf(request.route))) === undefined) return undefined;
  await deleteQueuedMessage(store.context, queued.seq);
  if (request.storedBody) await store.deleteRequestBody(request.storedBody.name);
  publishCancelNotice(store.context, id);
  return { route: request.route, was: JobStatus.Queued };
}

/** Cancels a job, or deletes a finished one (see the top of this file). Throws {@link JobNotFoundError}. */
export async function cancelJob(store: JobStore, id: string, options: CancelOptions): Promise<CancelResult> {
  for (let i = 0; i < CANCEL_TRIES; i++) {
    const found = await store.readRecord(id);
    if (found && isFinal(found.record)) {
      await deleteFinished(store, found.record);
      publishCancelNotice(store.context, id);
      return { route: found.record.route, was: "finished" };
    }
    const result = found ? await cancelTracked(store, found, options) : await cancelQueued(store, id, options);
    if (result) return result;
  }
  throw new NatsUnavailableError("the job kept changing while being canceled, retry");
}

/** Forgets an expired job entirely (its record and response), so that an idempotent repeat starts clean. */
export async function forgetJob(store: JobStore, id: string): Promise<void> {
  await Promise.all([store.deleteResponse(id), store.deleteRecord(id)]);
}
