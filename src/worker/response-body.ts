/**
 * Storing a backend's response body as it arrives. A body that fits in one NATS message is kept
 * in memory and written to the results KV in one put; once it grows past that, what was read so
 * far and the rest are streamed to the Object Store chunk by chunk, so a worker holds at most one
 * message's worth of any response. Past the route's `maxResponseSize` the call is abandoned.
 */
import { ResponseTooLargeError } from "../errors.js";
import { BodyLocation } from "../store/job-record.js";
import type { JobStore } from "../store/job-store.js";

export interface StoredBody {
  readonly location: BodyLocation;
  readonly bytes: number;
  /** The body, base64, when it is small enough to ride in the record (`location` is `inline`). */
  readonly inline?: string;
}

function concat(chunks: readonly Uint8Array[], bytes: number): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  return Buffer.concat(chunks, bytes);
}

/**
 * Reads `body` to its end into the store under the job's id. Rejects with {@link ResponseTooLargeError}
 * past `limitBytes`, or with the body's own error; nothing is kept then.
 */
export async function storeResponseBody(
  store: JobStore,
  id: string,
  body: AsyncIterable<Uint8Array>,
  limitBytes: number,
): Promise<StoredBody> {
  const source = body[Symbol.asyncIterator]();
  let head: Uint8Array[] = [];
  let bytes = 0;
  const take = (chunk: Uint8Array): void => {
    bytes += chunk.byteLength;
    if (bytes > limitBytes) throw new ResponseTooLargeError(limitBytes);
  };
  try {
    for (;;) {
      const next = await source.next();
      if (next.done) return { ...(await store.putBody(id, concat(head, bytes))), bytes };
      take(next.value);
      head.push(next.value);
      if (bytes > store.maxKvBodyBytes) break;
    }

    async function* everything(): AsyncGenerator<Uint8Array> {
      const first = head;
      head = [];
      yield* first;
      for (;;) {
        const next = await source.next();
        if (next.done) return;
        take(next.value);
        yield next.value;
      }
    }
    await store.putBodyStream(id, ReadableStream.from(everything()));
    return { location: BodyLocation.Object, bytes };
  } catch (err) {
    // Stops the source: the backend connection is released instead of draining the rest.
    await source.return?.();
    throw err;
  }
}
