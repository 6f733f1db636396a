/**
 * What a job's transitions tell the world, from the one hook in `jobs/transitions.ts`:
 * - every transition (`queued` at accept included) is published on `<P>.events.<route>.<id>` as the
 *   job's status JSON: core NATS, at most once, nothing kept. Proxies fan these out to waiting
 *   clients; other services may subscribe too;
 * - a final transition of a job that asked for a callback queues its delivery in JetStream, and the
 *   transition waits for it, so the job's message is acked only once its callback is safe.
 */
import type { Logger } from "../log.js";
import { isFinal, toStatusBody, CallbackStatus } from "../jobs/record.js";
import type { JobRecord } from "../jobs/record.js";
import type { TransitionObserver } from "../jobs/transitions.js";
import { sendThisTurn } from "../nats/outbox.js";
import { enqueueDelivery } from "./delivery-queue.js";

export interface CompletionPublisherOptions {
  /** `jobs.path`: status JSON carries URLs under it. */
  readonly jobsPath: string;
  readonly log: Logger;
}

/** Whether a record found final again (see `TransitionObserver`) may still need its callback queued. */
function callbackMayBeUnqueued(record: JobRecord): boolean {
  return record.callback?.status === CallbackStatus.Pending && record.callback.attempts === 0;
}

export function createCompletionPublisher(options: CompletionPublisherOptions): TransitionObserver {
  const { jobsPath, log } = options;
  return {
    transitioned(store, record, again = false) {
      const needsCallback = record.callback !== undefined && isFinal(record) && (!again || callbackMayBeUnqueued(record));
      if (again && !needsCallback) return;
      const { context } = store;
      const body = toStatusBody(record, `${jobsPath}/${record.id}`);
      if (!again) {
        const subject = context.names.eventSubject(record.route, record.id);
        const event = JSON.stringify(body);
        sendThisTurn(() => context.nc.publish(subject, event)).catch((err: unknown) => {
          // A closed or draining connection: events are at most once, the record is what counts.
          log.debug({ err, job: record.id }, "could not publish a job event");
        });
      }
      if (!needsCallback) return;
      return enqueueDelivery(context, record, body).catch((err: unknown) => {
        log.warn({ err, job: record.id, route: record.route }, "could not queue the job's callback");
        throw err;
      });
    },
  };
}
