/**
 * Encryption at rest: AES-256-GCM with the job id as associated data, so a stored value opens only
 * as the job it was sealed for, only with a server key, and only unchanged.
 *
 * Two formats, told apart by their first byte:
 *
 *   message  C1 | key id (4) | IV (12, random) | ciphertext | tag (16)
 *   stream   F5 | key id (4) | salt (16) | nonce prefix (7) | segment 0 | segment 1 | ... | last segment
 *
 * A stream segment is 64 KiB of plaintext sealed on its own (plus its 16-byte tag; the last one may be
 * shorter, even empty). Each stream has its own key, HKDF of the server key with the random salt, so
 * nonces never repeat across streams; a segment's nonce is prefix | index (u32) | last-flag (1), and its
 * associated data repeats the header, index and flag, then the caller's aad. Reordered, dropped,
 * duplicated or spliced segments, and a stream cut at a segment boundary, all fail their tag.
 */
import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { ErrorCodes, SlowlaneError } from "../errors.js";
import type { SlowlaneErrorOptions } from "../errors.js";
import { deriveKey, KEY_BYTES, KeyPurposes } from "./server-keys.js";
import type { ServerKey, ServerKeys } from "./server-keys.js";

/** Stored data cannot be opened: changed, truncated, sealed for another job or with a key no longer configured. */
export class SealError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.STORED_DATA_UNREADABLE, message, options);
  }
}

/** First byte of each sealed format. Bytes that never start UTF-8 text, so stored JSON is never mistaken for them. */
export const SealFormats = {
  Message: 0xc1,
  Stream: 0xf5,
} as const;

const KEY_ID_BYTES = 4;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const MESSAGE_HEADER_BYTES = 1 + KEY_ID_BYTES;
const MESSAGE_OVERHEAD_BYTES = MESSAGE_HEADER_BYTES + IV_BYTES + TAG_BYTES;

/** Plaintext bytes per stream segment. */
export const SEGMENT_PLAIN_BYTES = 64 * 1024;
const SEGMENT_SEALED_BYTES = SEGMENT_PLAIN_BYTES + TAG_BYTES;
const STREAM_SALT_BYTES = 16;
const NONCE_PREFIX_BYTES = 7;
const STREAM_HEADER_BYTES = 1 + KEY_ID_BYTES + STREAM_SALT_BYTES + NONCE_PREFIX_BYTES;
/** The segment index is 4 bytes of the nonce: 2^32 segments of 64 KiB, 256 TiB per stream. */
const MAX_SEGMENT_INDEX = 0xffff_ffff;

const AUTH_FAILED = "stored data failed authentication: it was changed, truncated, reordered or sealed for another job";

/** Seals and opens values and streams with a set of server keys. */
export interface Sealer {
  /** Seals `plain` with the primary key, bound to `aad` (the job id). */
  seal(plain: Uint8Array, aad: string): Buffer;
  /** Opens what {@link Sealer.seal} made with any configured key; throws {@link SealError} otherwise. */
  open(sealed: Uint8Array, aad: string): Buffer;
  /** Seals a stream segment by segment, pulling from `source` only as the result is read. */
  sealStream(source: ReadableStream<Uint8Array>, aad: string): ReadableStream<Uint8Array>;
  /** Opens a sealed stream; each segment's plaintext is released only after its tag verified. Errors with {@link SealError}. */
  openStream(source: ReadableStream<Uint8Array>, aad: string): ReadableStream<Uint8Array>;
}

/** Bytes {@link Sealer.seal} makes from `plainBytes` bytes. */
export function sealedSize(plainBytes: number): number {
  return plainBytes + MESSAGE_OVERHEAD_BYTES;
}

/** Bytes {@link Sealer.sealStream} makes from `plainBytes` bytes (an empty input still has one, empty, segment). */
export function sealedStreamSize(plainBytes: number): number {
  const segments = Math.max(1, Math.ceil(plainBytes / SEGMENT_PLAIN_BYTES));
  return STREAM_HEADER_BYTES + plainBytes + segments * TAG_BYTES;
}

/**
 * Whether `bytes` (a whole value, or a stream's first chunk) start like sealed data. A hint for
 * reading values stored before a key was configured, not a proof: binary plaintext may start with
 * the same byte.
 */
export function isSealed(bytes: Uint8Array): boolean {
  return bytes[0] === SealFormats.Message || bytes[0] === SealFormats.Stream;
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The configured key a sealed value names, or a {@link SealError} that names the missing key (its id is a hash, safe to show). */
function findKey(byId: ReadonlyMap<string, ServerKey>, keyId: Uint8Array): ServerKey {
  const id = toBuffer(keyId).toString("hex");
  const key = byId.get(id);
  if (key === undefined) {
    throw new SealError(`stored data was sealed with key ${id}, which is not configured (when rotating, keep old keys below the new one)`);
  }
  return key;
}

function sealMessage(key: ServerKey, plain: Uint8Array, aad: string): Buffer {
  const header = Buffer.alloc(MESSAGE_HEADER_BYTES);
  header[0] = SealFormats.Message;
  header.write(key.id, 1, "hex");
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", deriveKey(key, KeyPurposes.Encrypt), iv, { authTagLength: TAG_BYTES });
  // The header is authenticated too, so a changed format byte or key id fails like any other change.
  cipher.setAAD(Buffer.concat([header, Buffer.from(aad, "utf8")]));
  const body = cipher.update(plain);
  const last = cipher.final();
  return Buffer.concat([header, iv, body, last, cipher.getAuthTag()]);
}

function openMessage(byId: ReadonlyMap<string, ServerKey>, sealed: Uint8Array, aad: string): Buffer {
  const bytes = toBuffer(sealed);
  if (bytes[0] !== SealFormats.Message) throw new SealError("stored data is not a sealed value (unknown format byte)");
  if (bytes.length < MESSAGE_OVERHEAD_BYTES) {
    throw new SealError(`stored data is truncated (${bytes.length} bytes, less than the ${MESSAGE_OVERHEAD_BYTES} of an empty sealed value)`);
  }
  const key = findKey(byId, bytes.subarray(1, MESSAGE_HEADER_BYTES));
  const ivEnd = MESSAGE_HEADER_BYTES + IV_BYTES;
  const tagStart = bytes.length - TAG_BYTES;
  const decipher = createDecipheriv("aes-256-gcm", deriveKey(key, KeyPurposes.Encrypt), bytes.subarray(MESSAGE_HEADER_BYTES, ivEnd), {
    authTagLength: TAG_BYTES,
  });
  decipher.setAAD(Buffer.concat([bytes.subarray(0, MESSAGE_HEADER_BYTES), Buffer.from(aad, "utf8")]));
  decipher.setAuthTag(bytes.subarray(tagStart));
  try {
    const body = decipher.update(bytes.subarray(ivEnd, tagStart));
    return Buffer.concat([body, decipher.final()]);
  } catch (cause) {
    throw new SealError(AUTH_FAILED, { cause });
  }
}

/**
 * Bytes arriving in chunks of any size, taken out in exact amounts. Keeps the chunks as they came
 * (no concatenation until a take), and drops consumed ones by moving a head index: `shift()` on
 * 64 Ki one-byte chunks would be quadratic.
 */
class ByteQueue {
  #chunks: Uint8Array[] = [];
  #head = 0;
  #offset = 0;
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.byteLength;
  }

  /** The next `n` bytes (`n` ≤ length): a view when one chunk holds them all, else a copy. */
  take(n: number): Buffer {
    const first = this.#chunks[this.#head];
    let out: Buffer;
    if (first !== undefined && first.byteLength - this.#offset >= n) {
      out = Buffer.from(first.buffer, first.byteOffset + this.#offset, n);
      this.#advance(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.#chunks[this.#head] as Uint8Array;
        const count = Math.min(chunk.byteLength - this.#offset, n - filled);
        out.set(chunk.subarray(this.#offset, this.#offset + count), filled);
        filled += count;
        this.#advance(count);
      }
    }
    this.#length -= n;
    return out;
  }

  /** Moves past `count` bytes of the head chunk (never more than it has left). */
  #advance(count: number): void {
    this.#offset += count;
    const chunk = this.#chunks[this.#head];
    if (chunk !== undefined && this.#offset === chunk.byteLength) {
      this.#head += 1;
      this.#offset = 0;
    }
    if (this.#head === this.#chunks.length) {
      this.#chunks = [];
      this.#head = 0;
    } else if (this.#head >= 1024) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }
}

/** Per-stream state both directions share: the stream's own key, its header and the caller's aad. */
interface StreamContext {
  readonly key: KeyObject;
  readonly header: Buffer;
  readonly aad: Buffer;
}

function toStreamContext(serverKey: ServerKey, header: Buffer, aad: string): StreamContext {
  const salt = header.subarray(1 + KEY_ID_BYTES, 1 + KEY_ID_BYTES + STREAM_SALT_BYTES);
  const key = createSecretKey(Buffer.from(hkdfSync("sha256", serverKey.bytes, salt, KeyPurposes.Stream, KEY_BYTES)));
  return { key, header, aad: Buffer.from(aad, "utf8") };
}

/** The nonce and associated data of segment `index`; both say whether it is the last, so a cut stream fails. */
function segmentParams(context: StreamContext, index: number, last: boolean): { nonce: Buffer; aad: Buffer } {
  if (index > MAX_SEGMENT_INDEX) throw new RangeError("a sealed stream holds at most 2^32 segments (256 TiB)");
  const nonce = Buffer.alloc(IV_BYTES);
  context.header.copy(nonce, 0, STREAM_HEADER_BYTES - NONCE_PREFIX_BYTES);
  nonce.writeUInt32BE(index, NONCE_PREFIX_BYTES);
  nonce[IV_BYTES - 1] = last ? 1 : 0;
  const position = Buffer.alloc(5);
  position.writeUInt32BE(index, 0);
  position[4] = last ? 1 : 0;
  return { nonce, aad: Buffer.concat([context.header, position, context.aad]) };
}

function sealSegment(context: StreamContext, index: number, last: boolean, plain: Uint8Array): Buffer {
  const { nonce, aad } = segmentParams(context, index, last);
  const cipher = createCipheriv("aes-256-gcm", context.key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const body = cipher.update(plain);
  const rest = cipher.final();
  return Buffer.concat([body, rest, cipher.getAuthTag()]);
}

function openSegment(context: StreamContext, index: number, last: boolean, sealed: Buffer): Buffer {
  const { nonce, aad } = segmentParams(context, index, last);
  const decipher = createDecipheriv("aes-256-gcm", context.key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    // GCM's update() already returns plaintext; it is only handed on once final() checked the tag.
    const body = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
    return Buffer.concat([body, decipher.final()]);
  } catch (cause) {
    throw new SealError(AUTH_FAILED, { cause });
  }
}

/** Reads from `reader` into `queue` until it holds `bytes` bytes or the source ends; returns whether it ended. */
async function fill(reader: ReadableStreamDefaultReader<Uint8Array>, queue: ByteQueue, bytes: number): Promise<boolean> {
  while (queue.length < bytes) {
    const next = await reader.read();
    if (next.done) return true;
    queue.push(next.value);
  }
  return false;
}

function sealStreamWith(serverKey: ServerKey, source: ReadableStream<Uint8Array>, aad: string): ReadableStream<Uint8Array> {
  const header = Buffer.alloc(STREAM_HEADER_BYTES);
  header[0] = SealFormats.Stream;
  header.write(serverKey.id, 1, "hex");
  randomBytes(STREAM_SALT_BYTES + NONCE_PREFIX_BYTES).copy(header, 1 + KEY_ID_BYTES);
  const context = toStreamContext(serverKey, header, aad);
  const reader = source.getReader();
  const queue = new ByteQueue();
  let ended = false;
  let index = 0;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(header);
    },
    async pull(controller) {
      // One byte beyond a full segment tells whether this segment is the last.
      if (!ended) ended = await fill(reader, queue, SEGMENT_PLAIN_BYTES + 1);
      const last = ended && queue.length <= SEGMENT_PLAIN_BYTES;
      const plain = queue.take(last ? queue.length : SEGMENT_PLAIN_BYTES);
      controller.enqueue(sealSegment(context, index, last, plain));
      index += 1;
      if (last) controller.close();
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

async function readStreamHeader(
  byId: ReadonlyMap<string, ServerKey>,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  queue: ByteQueue,
  aad: string,
): Promise<StreamContext> {
  await fill(reader, queue, STREAM_HEADER_BYTES);
  const first = queue.length > 0 ? queue.take(1)[0] : undefined;
  if (first !== undefined && first !== SealFormats.Stream) throw new SealError("stored data is not a sealed stream (unknown format byte)");
  if (queue.length < STREAM_HEADER_BYTES - 1) {
    throw new SealError(`stored data is truncated (${first === undefined ? 0 : queue.length + 1} bytes, shorter than a sealed stream's header)`);
  }
  // A copy: the header outlives the source's chunk it came in.
  const header = Buffer.concat([Buffer.from([first as number]), queue.take(STREAM_HEADER_BYTES - 1)]);
  const serverKey = findKey(byId, header.subarray(1, 1 + KEY_ID_BYTES));
  return toStreamContext(serverKey, header, aad);
}

function openStreamWith(
  byId: ReadonlyMap<string, ServerKey>,
  source: ReadableStream<Uint8Array>,
  aad: string,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  const queue = new ByteQueue();
  let context: StreamContext | undefined;
  let ended = false;
  let index = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        context ??= await readStreamHeader(byId, reader, queue, aad);
        if (!ended) ended = await fill(reader, queue, SEGMENT_SEALED_BYTES + 1);
        const last = ended && queue.length <= SEGMENT_SEALED_BYTES;
        if (last && queue.length < TAG_BYTES) throw new SealError(AUTH_FAILED);
        const plain = openSegment(context, index, last, queue.take(last ? queue.length : SEGMENT_SEALED_BYTES));
        index += 1;
        if (plain.length > 0) controller.enqueue(plain);
        if (last) controller.close();
      } catch (err) {
        // Stop reading the stored object: nothing after a bad segment can be trusted.
        reader.cancel(err).catch(() => {});
        throw err;
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/** A {@link Sealer} over `keys`: seals with `keys.primary`, opens with whichever of `keys.all` the data names. */
export function createSealer(keys: ServerKeys): Sealer {
  const byId = new Map(keys.all.map((key) => [key.id, key] as const));
  return {
    seal: (plain, aad) => sealMessage(keys.primary, plain, aad),
    open: (sealed, aad) => openMessage(byId, sealed, aad),
    sealStream: (source, aad) => sealStreamWith(keys.primary, source, aad),
    openStream: (source, aad) => openStreamWith(byId, source, aad),
  };
}
