/**
 * Questions the admin server asks JetStream: are the stream and buckets there (readiness), and
 * how many jobs wait and run per route (metrics). Each is one or a few API requests, bounded by
 * a short timeout so a slow server makes a probe fail rather than hang.
 */
import { messageOf } from "../errors.js";
import type { JetStreamContext } from "./context.js";

/** A route consumer's counts, as JetStream reports them. */
export interface QueueDepth {
  readonly route: string;
  /** Jobs waiting for a worker (consumer `num_pending`). */
  readonly pending: number;
  /** Jobs handed to a worker and not yet acked (consumer `num_ack_pending`). */
  readonly inFlight: number;
}

/** Bound on one health question: a Kubernetes probe gives up after 1 s by default, answer before it does. */
export const HEALTH_TIMEOUT_MS = 750;

/** `promise`, or a rejection saying so after `timeoutMs` (the request itself runs to its own timeout). */
export async function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Checks that the work-queue stream and the jobs and results buckets answer. Throws an Error
 * naming the first one that does not.
 */
export async function checkJetStream(context: JetStreamContext, timeoutMs = HEALTH_TIMEOUT_MS): Promise<void> {
  const { jsm, names } = context;
  const streams = [names.stream, names.jobsBucketStream, names.resultsBucketStream];
  await Promise.all(
    streams.map(async (stream) => {
      try {
        await withTimeout(jsm.streams.info(stream), timeoutMs);
      } catch (err) {
        throw new Error(`stream ${stream}: ${messageOf(err)}`, { cause: err });
      }
    }),
  );
}

/**
 * Every route consumer's pending and in-flight counts, in one listing of the stream's consumers
 * (routes removed from the config included, as long as their consumer exists).
 */
export async function readQueueDepths(context: JetStreamContext, timeoutMs = HEALTH_TIMEOUT_MS): Promise<QueueDepth[]> {
  const { jsm, names } = context;
  const list = async (): Promise<QueueDepth[]> => {
    const depths: QueueDepth[] = [];
    for await (const info of jsm.consumers.list(names.stream)) {
      const route = names.routeOfConsumer(info.name);
      if (route !== undefined) depths.push({ route, pending: info.num_pending, inFlight: info.num_ack_pending });
    }
    return depths;
  };
  return withTimeout(list(), timeoutMs);
}
