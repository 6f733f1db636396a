/**
 * Storing a backend's response body as it arrives. A body that fits in one NATS message is kept
 * in memory and written in one piece (in the job record up to 8 KiB, else to the results KV); once
 * it grows past that, what was read so far and the rest are streamed to the Object Store chunk by
 * chunk, so a worker holds at most one message's worth of any response. Past the route's
 * `maxResponseSize` the call is abandoned.
 *
 * A write that fails after the backend answered must not cost another call: a body held in memory
 * is written again (`keep`, with backoff) until it is stored. A body streamed to the Object Store
 * cannot be: its write failing rejects with {@link ResultStreamError}, and the job goes back to the
 * queue with a backoff.
 */
import { ResponseTooLargeError, SlowlaneError } from "../errors.js";
import { BodyLocation } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { splitBody } from "../shared/split-body.js";
import type { BackendResponse } from "./backend-call.js";

export interface StoredBody {
  readonly location: BodyLocation;
  readonly bytes: number;
  /** The body, base64, when it is small enough to ride in the record (`location` is `inline`). */
  readonly inline?: string;
}

/** Runs a write of the result until it succeeds (or the job is aborted), with backoff between tries. */
export type KeepWriting = <T>(what: string, write: () => Promise<T>) => Promise<T>;

/** Streaming a large response body into the Object Store failed on the store's side: the body is not kept. */
export class ResultStreamError extends Error {
  constructor(options: ErrorOptions) {
    super("storing the streamed response body failed", options);
    this.name = "ResultStreamError";
  }
}

/**
 * Reads the response body to its end into the store under the job's id. Rejects with {@link ResponseTooLargeError}
 * past `limitBytes`, with the body's own error, or with {@link ResultStreamError}; nothing is kept then.
 */
export async function storeResponseBody(
  store: JobStore,
  id: string,
  res: Pick<BackendResponse, "body" | "discard">,
  limitBytes: number,
  keep: KeepWriting,
): Promise<StoredBody> {
  try {
    const split = await splitBody(res.body, store.maxKvBodyBytes, limitBytes, () => new ResponseTooLargeError(limitBytes));
    if ("whole" in split) {
      const { whole } = split;
      return { ...(await keep("the response body", () => store.putBody(id, whole))), bytes: whole.byteLength };
    }
    try {
      await store.putBodyStream(id, split.stream);
    } catch (err) {
      // The backend's own failures (timeout, reset, too large) come through the stream as SlowlaneErrors.
      throw err instanceof SlowlaneError ? err : new ResultStreamError({ cause: err });
    }
    return { location: BodyLocation.Object, bytes: split.bytes() };
  } catch (err) {
    // The backend connection is released instead of draining the rest of a body nobody keeps.
    res.discard();
    throw err;
  }
}
