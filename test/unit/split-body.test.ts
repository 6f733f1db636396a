/**
 * `splitBody` with bodies in awkward chunks: a million 1-byte chunks must come out as the same bytes,
 * in few pieces, without keeping the chunks themselves.
 */
import { describe, expect, it } from "vitest";
import { splitBody } from "../../src/shared/split-body.js";
import { binaryPattern } from "../helpers/backend.js";

const KiB = 1024;

class TooLarge extends Error {}
const tooLarge = () => new TooLarge("too large");

/** `bytes` as chunks of `size`, each a fresh Buffer. */
async function* chunksOf(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.byteLength; i += size) yield Buffer.from(bytes.subarray(i, i + size));
}

/**
 * `bytes` one byte at a time, always in the same 1-byte buffer, overwritten for the next byte: a
 * reader that keeps chunks instead of copying them ends up with the last byte everywhere.
 */
async function* reusedByteByByte(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  const one = Buffer.alloc(1);
  for (const byte of bytes) {
    one[0] = byte;
    yield one;
  }
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<{ bytes: Buffer; pieces: number }> {
  const pieces: Uint8Array[] = [];
  for await (const piece of stream) pieces.push(piece);
  return { bytes: Buffer.concat(pieces), pieces: pieces.length };
}

describe("splitBody", () => {
  it("copies small chunks into one buffer: a body of 1-byte chunks is read intact", async () => {
    const body = binaryPattern(200 * KiB);
    const split = await splitBody(reusedByteByByte(body), 960 * KiB, 32 * 1024 * KiB, tooLarge);
    if (!("whole" in split)) throw new Error("expected the body whole");
    expect(Buffer.compare(Buffer.from(split.whole), body)).toBe(0);
  });

  it("streams a longer body of 1-byte chunks in pieces of 64 KiB, intact", async () => {
    const body = binaryPattern(1100 * KiB);
    const split = await splitBody(reusedByteByByte(body), 960 * KiB, 32 * 1024 * KiB, tooLarge);
    if (!("stream" in split)) throw new Error("expected a stream");
    const { bytes, pieces } = await readAll(split.stream);
    expect(Buffer.compare(bytes, body)).toBe(0);
    expect(split.bytes()).toBe(body.byteLength);
    // The head (960 KiB + 1 byte) is one piece; the other 140 KiB come in 64 KiB pieces.
    expect(pieces).toBe(1 + Math.ceil((body.byteLength - 960 * KiB - 1) / (64 * KiB)));
  });

  it("passes large chunks on as they are, after any small ones gathered before them", async () => {
    const body = binaryPattern(300 * KiB);
    async function* mixed(): AsyncGenerator<Uint8Array> {
      yield* chunksOf(body.subarray(0, 100 * KiB), 100 * KiB);
      yield* chunksOf(body.subarray(100 * KiB, 110 * KiB), 1);
      yield* chunksOf(body.subarray(110 * KiB), 64 * KiB);
    }
    const split = await splitBody(mixed(), 64 * KiB, 1024 * KiB, tooLarge);
    if (!("stream" in split)) throw new Error("expected a stream");
    const { bytes, pieces } = await readAll(split.stream);
    expect(Buffer.compare(bytes, body)).toBe(0);
    // head (100 KiB), the 10 KiB gathered, then 190 KiB as 64 + 64 + 62.
    expect(pieces).toBe(5);
  });

  it("hands over an empty body and a one-chunk body whole", async () => {
    const empty = await splitBody(chunksOf(new Uint8Array(0), 1), 1024, 2048, tooLarge);
    expect("whole" in empty && empty.whole.byteLength).toBe(0);
    const one = await splitBody(chunksOf(binaryPattern(1000), 1000), 1024, 2048, tooLarge);
    expect("whole" in one && Buffer.compare(Buffer.from(one.whole), binaryPattern(1000))).toBe(0);
  });

  it("fails past maxBytes, in the head and once streaming", async () => {
    await expect(splitBody(chunksOf(binaryPattern(5000), 1), 8 * KiB, 4 * KiB, tooLarge)).rejects.toBeInstanceOf(TooLarge);
    const split = await splitBody(chunksOf(binaryPattern(100 * KiB), 1), 8 * KiB, 64 * KiB, tooLarge);
    if (!("stream" in split)) throw new Error("expected a stream");
    await expect(readAll(split.stream)).rejects.toBeInstanceOf(TooLarge);
  });
});
