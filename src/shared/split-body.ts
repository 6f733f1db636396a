/**
 * Reading a body of unknown size as it arrives, for the two places that store one: the accept
 * path (request bodies) and the worker (response bodies). A body that ends within `inlineBytes`
 * is handed over whole, to be written in one piece; a longer one is handed over as a stream of
 * what was read so far and the rest, to be written chunk by chunk, so no more than `inlineBytes`
 * is ever held. Past `maxBytes`, reading fails with `tooLarge()`. The source is left as it is on
 * failure: the caller decides whether to drain it (to answer a client) or destroy it.
 *
 * Chunks are copied, not kept: a client can send a body in 1-byte chunks (chunked encoding makes
 * each one a Buffer of its own), and a million of them kept in a list cost far more than the bytes.
 * The head is collected in one buffer that doubles as it fills; once the body streams, small
 * chunks are gathered into pieces of {@link GATHER_BYTES} and large ones passed on as they are.
 */

export type SplitBody =
  | { readonly whole: Uint8Array }
  | {
      /** Everything, from the first byte; errors with `tooLarge()` or the source's own error. */
      readonly stream: ReadableStream<Uint8Array>;
      /** Bytes read so far: the body's size once `stream` has ended. */
      bytes(): number;
    };

/** Once the body streams, chunks at least this big are passed on as they are. */
const PASS_THROUGH_BYTES = 16 * 1024;
/** Smaller chunks are gathered into pieces of this size. */
const GATHER_BYTES = 64 * 1024;

/**
 * Bytes copied one chunk after another into one buffer. Its capacity doubles as it fills (so a
 * body read in tiny chunks costs a few copies, not a buffer per chunk), up to `capacityBytes`,
 * past which it grows only by what is needed.
 */
class ByteCollector {
  #buffer: Buffer | undefined;
  #length = 0;

  constructor(private readonly capacityBytes: number) {}

  get length(): number {
    return this.#length;
  }

  append(chunk: Uint8Array): void {
    const needed = this.#length + chunk.byteLength;
    let buffer = this.#buffer;
    if (buffer === undefined || needed > buffer.byteLength) {
      const doubled = Math.min(this.capacityBytes, 2 * (buffer?.byteLength ?? 0));
      const grown = Buffer.allocUnsafe(Math.max(needed, doubled));
      if (buffer !== undefined) buffer.copy(grown, 0, 0, this.#length);
      this.#buffer = buffer = grown;
    }
    buffer.set(chunk, this.#length);
    this.#length = needed;
  }

  /** The bytes collected (a view of the buffer, not a copy); the collector starts empty again. */
  take(): Uint8Array {
    const bytes = this.#buffer === undefined ? new Uint8Array(0) : this.#buffer.subarray(0, this.#length);
    this.#buffer = undefined;
    this.#length = 0;
    return bytes;
  }
}

/** The rest of `source` after the head: small chunks gathered, large ones passed on; counted by `take`. */
async function* gathered(source: AsyncIterator<Uint8Array>, take: (chunk: Uint8Array) => void): AsyncGenerator<Uint8Array> {
  const small = new ByteCollector(GATHER_BYTES);
  for (;;) {
    const next = await source.next();
    if (next.done) break;
    const chunk = next.value;
    take(chunk);
    if (chunk.byteLength >= PASS_THROUGH_BYTES) {
      if (small.length > 0) yield small.take();
      yield chunk;
      continue;
    }
    small.append(chunk);
    if (small.length >= GATHER_BYTES) yield small.take();
  }
  if (small.length > 0) yield small.take();
}

export async function splitBody(
  body: AsyncIterable<Uint8Array>,
  inlineBytes: number,
  maxBytes: number,
  tooLarge: () => Error,
): Promise<SplitBody> {
  const source = body[Symbol.asyncIterator]();
  const head = new ByteCollector(inlineBytes);
  let bytes = 0;
  const take = (chunk: Uint8Array): void => {
    bytes += chunk.byteLength;
    if (bytes > maxBytes) throw tooLarge();
  };
  for (;;) {
    const next = await source.next();
    if (next.done) return { whole: head.take() };
    take(next.value);
    head.append(next.value);
    if (bytes > inlineBytes) break;
  }
  async function* everything(): AsyncGenerator<Uint8Array> {
    yield head.take();
    yield* gathered(source, take);
  }
  return { stream: ReadableStream.from(everything()), bytes: () => bytes };
}
