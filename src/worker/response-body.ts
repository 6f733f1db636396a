/**
 * Storing a backend's response body as it arrives. A body that fits in one NATS message is kept
 * in memory and written in one piece (in the job record up to 8 KiB, else to the results KV); once
 * it grows past that, what was read so
 * far and the rest are streamed to the Object Store chunk by chunk, so a worker holds at most one
 * message's worth of any response. Past the route's `maxResponseSize` the call is abandoned.
 */
import { ResponseTooLargeError } from "../errors.js";
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

/**
 * Reads the response body to its end into the store under the job's id. Rejects with {@link ResponseTooLargeError}
 * past `limitBytes`, or with the body's own error; nothing is kept then.
 */
export async function storeResponseBody(
  store: JobStore,
  id: string,
  res: Pick<BackendResponse, "body" | "discard">,
  limitBytes: number,
): Promise<StoredBody> {
  try {
    const split = await splitBody(res.body, store.maxKvBodyBytes, limitBytes, () => new ResponseTooLargeError(limitBytes));
    if ("whole" in split) return { ...(await store.putBody(id, split.whole)), bytes: split.whole.byteLength };
    await store.putBodyStream(id, split.stream);
    return { location: BodyLocation.Object, bytes: split.bytes() };
  } catch (err) {
    // The backend connection is released instead of draining the rest of a body nobody keeps.
    res.discard();
    throw err;
  }
}
