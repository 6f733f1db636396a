/**
 * Reading an object of the bodies store one chunk at a time, only as fast as the reader takes them.
 *
 * nats.js's `ObjectStore.get()` feeds its stream from an ordered push consumer that enqueues every
 * chunk as it arrives, whether or not anyone reads them: a client that stops reading a 32 MiB result
 * would have the whole object pulled into memory, once per such client. Here each chunk is one
 * direct get (`next_by_subj` from the previous chunk's sequence), made only when the stream is
 * pulled: what is held per reader is the chunk being handed over, whatever the object's size.
 * The digest is checked at the end, as nats.js does; a mismatch errors the stream.
 */
import { createHash } from "node:crypto";
import type { JetStreamContext } from "../nats/context.js";

/** The object store's digest prefix (nats.js writes `SHA-256=<base64url>`). */
const DIGEST_PREFIX = "SHA-256=";

function digestMatches(expected: string, actual: Buffer): boolean {
  if (!expected.startsWith(DIGEST_PREFIX)) return false;
  return Buffer.from(expected.slice(DIGEST_PREFIX.length), "base64url").equals(actual);
}

/**
 * The object `name` as a stream that reads one chunk per pull (no read-ahead), or `undefined` when
 * there is no such object (never written, deleted, expired). Canceling the stream stops reading.
 */
export async function readObject(context: JetStreamContext, name: string): Promise<ReadableStream<Uint8Array> | undefined> {
  const info = await context.bodies.info(name);
  if (!info || info.deleted) return undefined;
  if (info.options?.link) throw new Error(`object ${name} is a link, which slowlane never writes`);
  const stream = context.names.bodiesStoreStream;
  const subject = context.names.bodiesChunkSubject(info.nuid);
  const sha = createHash("sha256");
  let nextSeq = 0;
  let readBytes = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (readBytes >= info.size) {
          if (!digestMatches(info.digest, sha.digest())) throw new Error(`object ${name} is corrupt: its digest does not match`);
          controller.close();
          return;
        }
        const chunk = await context.jsm.direct.getMessage(stream, { seq: nextSeq, next_by_subj: subject });
        if (!chunk) throw new Error(`object ${name} lost its chunks after ${readBytes} of ${info.size} bytes (expired or deleted)`);
        nextSeq = chunk.seq + 1;
        readBytes += chunk.data.byteLength;
        sha.update(chunk.data);
        controller.enqueue(chunk.data);
      },
    },
    // Pull only when the reader asks: no chunk is fetched ahead of the one being read.
    { highWaterMark: 0 },
  );
}
