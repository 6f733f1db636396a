/**
 * Reading a body of unknown size as it arrives, for the two places that store one: the accept
 * path (request bodies) and the worker (response bodies). A body that ends within `inlineBytes`
 * is handed over whole, to be written in one piece; a longer one is handed over as a stream of
 * what was read so far and the rest, to be written chunk by chunk, so no more than `inlineBytes`
 * is ever held. Past `maxBytes`, reading fails with `tooLarge()`. The source is left as it is on
 * failure: the caller decides whether to drain it (to answer a client) or destroy it.
 */

export type SplitBody =
  | { readonly whole: Uint8Array }
  | {
      /** Everything, from the first byte; errors with `tooLarge()` or the source's own error. */
      readonly stream: ReadableStream<Uint8Array>;
      /** Bytes read so far: the body's size once `stream` has ended. */
      bytes(): number;
    };

function concat(chunks: readonly Uint8Array[], bytes: number): Uint8Array {
  return chunks.length === 1 ? (chunks[0] as Uint8Array) : Buffer.concat(chunks, bytes);
}

export async function splitBody(
  body: AsyncIterable<Uint8Array>,
  inlineBytes: number,
  maxBytes: number,
  tooLarge: () => Error,
): Promise<SplitBody> {
  const source = body[Symbol.asyncIterator]();
  let head: Uint8Array[] = [];
  let bytes = 0;
  const take = (chunk: Uint8Array): void => {
    bytes += chunk.byteLength;
    if (bytes > maxBytes) throw tooLarge();
  };
  for (;;) {
    const next = await source.next();
    if (next.done) return { whole: concat(head, bytes) };
    take(next.value);
    head.push(next.value);
    if (bytes > inlineBytes) break;
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
  return { stream: ReadableStream.from(everything()), bytes: () => bytes };
}
