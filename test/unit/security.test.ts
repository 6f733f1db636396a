/**
 * The security primitives: server keys (file parsing, rotation, sub-keys), sealing values and streams
 * (AES-256-GCM, segment by segment for streams), owner tags, idempotent ids and tagged job ids.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, SlowlaneError } from "../../src/errors.js";
import { legacyJobId } from "../helpers/keys.js";
import {
  createTaggedJobId,
  hasValidTag,
  isLegacyJobId,
  isTaggedJobId,
  toTaggedJobId,
} from "../../src/security/job-ids.js";
import { idempotentJobId, idempotentJobIdCandidates, ownerMatches, ownerTag } from "../../src/security/keyed-hash.js";
import {
  createSealer,
  isSealed,
  SealError,
  SealFormats,
  sealedSize,
  sealedStreamSize,
  SEGMENT_PLAIN_BYTES,
} from "../../src/security/seal.js";
import { deriveKey, generateKeyLine, KeyPurposes, loadServerKeys, parseServerKeys } from "../../src/security/server-keys.js";
import type { ServerKeys } from "../../src/security/server-keys.js";

const SEG = SEGMENT_PLAIN_BYTES;
const TAG = 16;
const STREAM_HEADER = 28;
const SEALED_SEG = SEG + TAG;

function keysOf(...lines: string[]): ServerKeys {
  return parseServerKeys(lines.join("\n"), "keys.txt");
}

const oldLine = generateKeyLine();
const newLine = generateKeyLine();
const oldKeys = keysOf(oldLine);
const rotatedKeys = keysOf(newLine, oldLine);
const newKeys = keysOf(newLine);

/** The ConfigError `fn` throws (fails the test when it throws nothing or something else). */
function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

function sealErrorOf(fn: () => unknown): SealError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SealError);
    return err as SealError;
  }
  throw new Error("expected a SealError, nothing was thrown");
}

/** A pull-based source handing out `bytes` in chunks whose sizes `nextSize` picks. */
function streamOf(bytes: Uint8Array, nextSize: number | (() => number)): ReadableStream<Uint8Array> {
  let offset = 0;
  const size = typeof nextSize === "number" ? () => nextSize : nextSize;
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (offset >= bytes.length) {
          controller.close();
          return;
        }
        const end = Math.min(bytes.length, offset + Math.max(1, size()));
        // A copy, as a real source would hand out fresh chunks.
        controller.enqueue(Uint8Array.prototype.slice.call(bytes, offset, end));
        offset = end;
      },
    },
    { highWaterMark: 0 },
  );
}

/** Reads everything; on an error, returns what was delivered before it and the error. */
async function drain(stream: ReadableStream<Uint8Array>): Promise<{ bytes: Buffer; chunks: Buffer[]; error?: unknown }> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream) chunks.push(Buffer.from(chunk));
    return { bytes: Buffer.concat(chunks), chunks };
  } catch (error) {
    return { bytes: Buffer.concat(chunks), chunks, error };
  }
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Buffer> {
  const { bytes, error } = await drain(stream);
  if (error !== undefined) throw error;
  return bytes;
}

/** A small deterministic generator, so random chunk sizes repeat from run to run. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

async function sealedStreamOf(keys: ServerKeys, plain: Uint8Array, aad: string): Promise<Buffer> {
  return collect(createSealer(keys).sealStream(streamOf(plain, 100_000), aad));
}

function flipBit(bytes: Uint8Array, offset: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[offset] = (copy[offset] as number) ^ 0x01;
  return copy;
}

describe("parsing key files", () => {
  it("reads one key per line, skipping blank lines, comments, spaces and CRLF; the first is primary", () => {
    const a = generateKeyLine();
    const b = generateKeyLine();
    const keys = parseServerKeys(`# rotated 2024-05\r\n\r\n  ${a}  \r\n   # old key, keep until data expires\n${b}\n`, "k");
    expect(keys.all).toHaveLength(2);
    expect(keys.primary).toBe(keys.all[0]);
    expect(keys.all[0]?.bytes.equals(Buffer.from(a, "base64"))).toBe(true);
    expect(keys.all[1]?.bytes.equals(Buffer.from(b, "base64"))).toBe(true);
  });

  it("names each key with a stable 8-hex-digit id that differs between keys", () => {
    const line = generateKeyLine();
    const first = keysOf(line).primary.id;
    expect(first).toMatch(/^[0-9a-f]{8}$/);
    expect(keysOf(generateKeyLine(), line).all[1]?.id).toBe(first);
    expect(keysOf(generateKeyLine()).primary.id).not.toBe(first);
    // Ids are written into stored data: a change of derivation would orphan it.
    expect(keysOf("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").primary.id).toBe("f706210d");
  });

  it("accepts URL-safe and unpadded base64 for the same key", () => {
    const bytes = randomBytes(32);
    const standard = keysOf(bytes.toString("base64")).primary;
    const urlSafe = keysOf(bytes.toString("base64url")).primary;
    expect(urlSafe.id).toBe(standard.id);
    expect(urlSafe.bytes.equals(bytes)).toBe(true);
  });

  it("generateKeyLine makes a fresh 32-byte base64 key each time", () => {
    const lines = new Set(Array.from({ length: 100 }, generateKeyLine));
    expect(lines.size).toBe(100);
    for (const line of lines) expect(Buffer.from(line, "base64")).toHaveLength(32);
    expect(generateKeyLine()).toMatch(/^[A-Za-z0-9+/]{43}=$/);
  });

  it("reports every bad line with its number and a fix, and never the key material", () => {
    const good = generateKeyLine();
    const short = randomBytes(31).toString("base64");
    const long = randomBytes(33).toString("base64");
    const junk = `${generateKeyLine()} # my key`;
    const zero = Buffer.alloc(32).toString("base64");
    const text = ["# keys", good, "", short, long, junk, zero, good, "ab=cd"].join("\n");
    const err = configErrorOf(() => parseServerKeys(text, "/etc/slowlane/keys"));
    expect(err.file).toBe("/etc/slowlane/keys");
    expect(err.problems.map((p) => p.line)).toEqual([4, 5, 6, 7, 8, 9]);
    for (const p of err.problems) expect(p.path).toBe("security.keyFile");
    const messages = err.problems.map((p) => p.message);
    expect(messages[0]).toBe("line 4: not base64 of 32 bytes (got 31 bytes); make one with: slowlane keygen");
    expect(messages[1]).toBe("line 5: not base64 of 32 bytes (got 33 bytes); make one with: slowlane keygen");
    expect(messages[2]).toMatch(/^line 6: not base64 .*slowlane keygen$/);
    expect(messages[3]).toMatch(/^line 7: all 32 bytes are zero/);
    expect(messages[4]).toBe("line 8: the same key as line 2 (remove one)");
    expect(messages[5]).toMatch(/^line 9: not base64 /);
    expect(err.message).toContain("/etc/slowlane/keys:4 security.keyFile: line 4: not base64 of 32 bytes");
    for (const secret of [good, short, long, junk, good.slice(0, 12), short.slice(0, 12)]) {
      expect(err.message).not.toContain(secret);
      expect(JSON.stringify(err.problems)).not.toContain(secret);
    }
  });

  it("refuses a file without a key: empty, blank or only comments", () => {
    for (const text of ["", "\n\n", "# no key yet\n  # still none\n"]) {
      const err = configErrorOf(() => parseServerKeys(text, "keys"));
      expect(err.problems).toEqual([
        { path: "security.keyFile", message: "no key in the file (it is empty or only comments); make one with: slowlane keygen" },
      ]);
    }
  });

});

describe("loading and using server keys", () => {
  const dir = mkdtempSync(join(tmpdir(), "slowlane-keys-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("loads a key file, and explains a missing or oversized one", () => {
    const file = join(dir, "keys");
    const line = generateKeyLine();
    writeFileSync(file, `${line}\n`);
    expect(loadServerKeys(file).primary.bytes.equals(Buffer.from(line, "base64"))).toBe(true);

    const missing = configErrorOf(() => loadServerKeys(join(dir, "nope")));
    expect(missing.problems[0]?.message).toMatch(/^key file not found; make one with: slowlane keygen/);
    expect((missing.cause as NodeJS.ErrnoException).code).toBe("ENOENT");

    const big = join(dir, "big");
    writeFileSync(big, `${line}\n`.repeat(5000));
    expect(configErrorOf(() => loadServerKeys(big)).problems[0]?.message).toMatch(/larger than 64 KiB/);
  });

  it("never shows key bytes when keys are logged or JSON-encoded", () => {
    const keys = keysOf(newLine, oldLine);
    const hexOf = (line: string) => Buffer.from(line, "base64").toString("hex");
    for (const shown of [JSON.stringify(keys), inspect(keys, { depth: 10 })]) {
      expect(shown).toContain(keys.primary.id);
      for (const line of [newLine, oldLine]) {
        expect(shown).not.toContain(line.slice(0, 16));
        expect(shown).not.toContain(hexOf(line).slice(0, 16));
      }
    }
    expect(Object.isFrozen(keys) && Object.isFrozen(keys.primary) && Object.isFrozen(keys.all)).toBe(true);
  });

  it("derives a distinct sub-key per purpose, never the key itself, the same each time", () => {
    const key = newKeys.primary;
    const subKeys = Object.values(KeyPurposes).map((purpose) => deriveKey(key, purpose).export());
    const distinct = new Set([...subKeys, key.bytes].map((b) => b.toString("hex")));
    expect(distinct.size).toBe(subKeys.length + 1);
    for (const sub of subKeys) expect(sub).toHaveLength(32);
    // A second parse of the same line makes a new key object: the derivation, not the cache, must agree.
    expect(deriveKey(keysOf(newLine).primary, KeyPurposes.Encrypt).export().equals(subKeys[0] as Buffer)).toBe(true);
  });
});

describe("sealing values", () => {
  const sealer = createSealer(rotatedKeys);

  it("round-trips values of any size, and the sealed size is as documented", () => {
    for (const size of [0, 1, 16, 1000, 70_000]) {
      const plain = randomBytes(size);
      const sealed = sealer.seal(plain, "job-1");
      expect(sealed).toHaveLength(sealedSize(size));
      expect(sealer.open(sealed, "job-1").equals(plain)).toBe(true);
    }
  });

  it("writes the format byte and the primary key's id, and never the plaintext", () => {
    const plain = Buffer.from("the quarterly report: revenue up, secrets inside ".repeat(4));
    const sealed = sealer.seal(plain, "job-1");
    expect(sealed[0]).toBe(SealFormats.Message);
    expect(sealed.subarray(1, 5).toString("hex")).toBe(rotatedKeys.primary.id);
    expect(sealed.includes(Buffer.from("secrets"))).toBe(false);
    // A random IV: the same value sealed twice looks different.
    expect(sealer.seal(plain, "job-1").equals(sealed)).toBe(false);
  });

  it("opens values sealed under a plain Uint8Array view into a larger buffer", () => {
    const sealed = sealer.seal(Buffer.from("hello"), "job-1");
    const padded = new Uint8Array(sealed.length + 10);
    padded.set(sealed, 5);
    expect(sealer.open(padded.subarray(5, 5 + sealed.length), "job-1").toString()).toBe("hello");
  });

  it("isSealed tells sealed data from stored JSON and text", () => {
    expect(isSealed(sealer.seal(Buffer.from("x"), "a"))).toBe(true);
    expect(isSealed(Buffer.from('{"id":"x"}'))).toBe(false);
    expect(isSealed(Buffer.from("plain text"))).toBe(false);
    expect(isSealed(Buffer.from("é"))).toBe(false);
    expect(isSealed(new Uint8Array(0))).toBe(false);
  });

  it("opens after a rotation while the old key is listed, and refuses once it is gone", () => {
    const sealedByOld = createSealer(oldKeys).seal(Buffer.from("made before rotation"), "job-7");
    expect(createSealer(rotatedKeys).open(sealedByOld, "job-7").toString()).toBe("made before rotation");
    const err = sealErrorOf(() => createSealer(newKeys).open(sealedByOld, "job-7"));
    expect(err.message).toContain(`key ${oldKeys.primary.id}, which is not configured`);
    // New data uses the new key, which the old key set cannot open.
    const sealedByNew = createSealer(rotatedKeys).seal(Buffer.from("after"), "job-8");
    expect(sealedByNew.subarray(1, 5).toString("hex")).toBe(newKeys.primary.id);
    sealErrorOf(() => createSealer(oldKeys).open(sealedByNew, "job-8"));
  });

  it("detects a change in every region: format byte, key id, IV, ciphertext, tag", () => {
    const sealed = sealer.seal(Buffer.from("do not touch this value"), "job-1");
    const regions = { format: 0, keyId: 2, iv: 10, ciphertext: 20, tag: sealed.length - 3 };
    const messages = Object.fromEntries(
      Object.entries(regions).map(([region, offset]) => [region, sealErrorOf(() => sealer.open(flipBit(sealed, offset), "job-1")).message]),
    );
    expect(messages.format).toMatch(/not a sealed value/);
    expect(messages.keyId).toMatch(/which is not configured/);
    for (const region of ["iv", "ciphertext", "tag"]) expect(messages[region]).toMatch(/failed authentication/);
  });

  it("detects truncation and appended bytes", () => {
    const sealed = sealer.seal(Buffer.from("whole"), "job-1");
    sealErrorOf(() => sealer.open(sealed.subarray(0, sealed.length - 1), "job-1"));
    expect(sealErrorOf(() => sealer.open(sealed.subarray(0, 20), "job-1")).message).toMatch(/truncated \(20 bytes/);
    sealErrorOf(() => sealer.open(Buffer.concat([sealed, Buffer.from([0])]), "job-1"));
    sealErrorOf(() => sealer.open(new Uint8Array(0), "job-1"));
  });

  it("opens only as the job it was sealed for, and says so without showing data or the id", () => {
    const sealed = sealer.seal(Buffer.from("private body"), "job-1");
    const err = sealErrorOf(() => sealer.open(sealed, "job-2"));
    expect(err.message).not.toContain("private");
    expect(err.message).not.toContain("job-");
    expect(err).toBeInstanceOf(SlowlaneError);
    expect(err.code).toBe("SLOWLANE_STORED_DATA_UNREADABLE");
    expect(err.statusCode).toBe(500);
    sealErrorOf(() => sealer.open(sealed, ""));
  });

  it("still opens data sealed by an earlier build (the format is stable)", () => {
    const keys = keysOf("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=");
    const golden = Buffer.from("wfcGIQ1nYD/DXRcR39FDTOmzSUUW/9caFDmqkvwATtMpcx60Amm905Ry0xH6PZvOAA==", "base64");
    expect(createSealer(keys).open(golden, "job-1").toString()).toBe("golden plaintext");
  });
});

describe("sealing streams", () => {
  const sealer = createSealer(rotatedKeys);

  it("round-trips every size around segment boundaries, fed one byte at a time", async () => {
    for (const size of [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG]) {
      const plain = randomBytes(size);
      const sealed = await collect(sealer.sealStream(streamOf(plain, 1), "job-1"));
      expect(sealed, `size ${size}`).toHaveLength(sealedStreamSize(size));
      const opened = await collect(sealer.openStream(streamOf(sealed, 1), "job-1"));
      expect(opened.equals(plain), `size ${size}`).toBe(true);
    }
  });

  it("round-trips multi-MiB input in one chunk and in random chunks, rechunked randomly on the way back", async () => {
    const plain = randomBytes(6 * 1024 * 1024 + 12_345);
    const random = seeded(42);
    const whole = await collect(sealer.sealStream(streamOf(plain, plain.length), "job-big"));
    const pieces = await collect(sealer.sealStream(streamOf(plain, () => Math.floor(random() * 300_000)), "job-big"));
    for (const sealed of [whole, pieces]) {
      expect(sealed).toHaveLength(sealedStreamSize(plain.length));
      const opened = await collect(sealer.openStream(streamOf(sealed, () => Math.floor(random() * 200_000)), "job-big"));
      expect(opened.equals(plain)).toBe(true);
    }
    // Different per-stream salts: the same input never seals to the same bytes.
    expect(whole.equals(pieces)).toBe(false);
  });

  it("emits the header, then one sealed segment per chunk, whatever the input chunk sizes", async () => {
    const plain = randomBytes(3 * SEG + 10);
    const { chunks } = await drain(sealer.sealStream(streamOf(plain, plain.length), "job-1"));
    expect(chunks.map((c) => c.length)).toEqual([STREAM_HEADER, SEALED_SEG, SEALED_SEG, SEALED_SEG, 10 + TAG]);
    expect(chunks[0]?.[0]).toBe(SealFormats.Stream);
    expect(isSealed(chunks[0] as Buffer)).toBe(true);
    expect(chunks[0]?.subarray(1, 5).toString("hex")).toBe(rotatedKeys.primary.id);
    const opened = await drain(sealer.openStream(streamOf(Buffer.concat(chunks), 1_000_000), "job-1"));
    expect(opened.chunks.map((c) => c.length)).toEqual([SEG, SEG, SEG, 10]);
  });

  it("seals empty input to a header and one empty, authenticated segment", async () => {
    const sealed = await collect(sealer.sealStream(streamOf(Buffer.alloc(0), 1), "job-1"));
    expect(sealed).toHaveLength(STREAM_HEADER + TAG);
    expect(await collect(sealer.openStream(streamOf(sealed, 5), "job-1"))).toHaveLength(0);
    // Without that segment, an emptied object is not mistaken for an empty body.
    const { error } = await drain(sealer.openStream(streamOf(sealed.subarray(0, STREAM_HEADER), 5), "job-1"));
    expect(error).toBeInstanceOf(SealError);
  });

});

describe("sealed streams that were tampered with", () => {
  const sealer = createSealer(rotatedKeys);

  it("detects truncation anywhere: at a segment boundary, mid-segment, in or right after the header, or empty", async () => {
    const plain = randomBytes(2 * SEG + 100);
    const sealed = await sealedStreamOf(rotatedKeys, plain, "job-1");
    const cuts = {
      lastSegmentDropped: STREAM_HEADER + 2 * SEALED_SEG,
      midLastSegment: sealed.length - 1,
      midFirstSegment: STREAM_HEADER + 100,
      headerOnly: STREAM_HEADER,
      inHeader: 10,
      empty: 0,
    };
    for (const [name, length] of Object.entries(cuts)) {
      const { bytes, error } = await drain(sealer.openStream(streamOf(sealed.subarray(0, length), 4096), "job-1"));
      expect(error, name).toBeInstanceOf(SealError);
      // Only segments that verified in full were released, and each is the true plaintext.
      expect(bytes.length % SEG, name).toBe(0);
      expect(plain.subarray(0, bytes.length).equals(bytes), name).toBe(true);
    }
    const lastDropped = await drain(sealer.openStream(streamOf(sealed.subarray(0, cuts.lastSegmentDropped), 4096), "job-1"));
    expect(lastDropped.bytes).toHaveLength(SEG);
    const inHeader = await drain(sealer.openStream(streamOf(sealed.subarray(0, 10), 4096), "job-1"));
    expect((inHeader.error as Error).message).toMatch(/truncated \(10 bytes/);
  });

  it("detects appended bytes and a duplicated last segment", async () => {
    const sealed = await sealedStreamOf(rotatedKeys, randomBytes(SEG + 5), "job-1");
    const last = sealed.subarray(STREAM_HEADER + SEALED_SEG);
    for (const longer of [Buffer.concat([sealed, Buffer.from([0])]), Buffer.concat([sealed, last])]) {
      const { error } = await drain(sealer.openStream(streamOf(longer, 65_536), "job-1"));
      expect(error).toBeInstanceOf(SealError);
    }
  });

  it("detects reordered segments and releases nothing from them", async () => {
    const plain = randomBytes(3 * SEG);
    const sealed = await sealedStreamOf(rotatedKeys, plain, "job-1");
    const seg = (i: number) => sealed.subarray(STREAM_HEADER + i * SEALED_SEG, STREAM_HEADER + (i + 1) * SEALED_SEG);
    const swapped = Buffer.concat([sealed.subarray(0, STREAM_HEADER), seg(1), seg(0), seg(2)]);
    const { bytes, error } = await drain(sealer.openStream(streamOf(swapped, 10_000), "job-1"));
    expect(error).toBeInstanceOf(SealError);
    expect(bytes).toHaveLength(0);
  });

  it("detects a segment spliced in from another stream of the same job and key", async () => {
    const plain = randomBytes(2 * SEG + 1);
    const a = await sealedStreamOf(rotatedKeys, plain, "job-1");
    const b = await sealedStreamOf(rotatedKeys, plain, "job-1");
    const spliced = Buffer.concat([a.subarray(0, STREAM_HEADER + SEALED_SEG), b.subarray(STREAM_HEADER + SEALED_SEG)]);
    const { bytes, error } = await drain(sealer.openStream(streamOf(spliced, 10_000), "job-1"));
    expect(error).toBeInstanceOf(SealError);
    expect(bytes.equals(plain.subarray(0, SEG))).toBe(true);
  });

  it("never releases a tampered segment's plaintext, and stops at the first bad segment", async () => {
    const plain = randomBytes(3 * SEG);
    const sealed = await sealedStreamOf(rotatedKeys, plain, "job-1");
    // A bit flipped early in segment 1: GCM's update() has that plaintext before the tag is checked.
    const tampered = flipBit(sealed, STREAM_HEADER + SEALED_SEG + 5);
    const { bytes, error } = await drain(sealer.openStream(streamOf(tampered, 1_000_000), "job-1"));
    expect(error).toBeInstanceOf(SealError);
    expect(bytes.equals(plain.subarray(0, SEG))).toBe(true);
    for (const offset of [0, 3, 10, 25]) {
      const header = await drain(sealer.openStream(streamOf(flipBit(sealed, offset), 1_000_000), "job-1"));
      expect(header.error, `header byte ${offset}`).toBeInstanceOf(SealError);
      expect(header.bytes, `header byte ${offset}`).toHaveLength(0);
    }
  });

  it("opens only as the job it was sealed for", async () => {
    const sealed = await sealedStreamOf(rotatedKeys, Buffer.from("private stream"), "job-1");
    const { bytes, error } = await drain(sealer.openStream(streamOf(sealed, 7), "job-2"));
    expect(error).toBeInstanceOf(SealError);
    expect(bytes).toHaveLength(0);
    expect((error as Error).message).not.toContain("private");
  });

});

describe("sealed streams: keys, formats and flow", () => {
  const sealer = createSealer(rotatedKeys);

  it("follows key rotation like single values", async () => {
    const plain = randomBytes(SEG + 1);
    const sealedByOld = await sealedStreamOf(oldKeys, plain, "job-1");
    expect((await collect(createSealer(rotatedKeys).openStream(streamOf(sealedByOld, 9_999), "job-1"))).equals(plain)).toBe(true);
    const { error } = await drain(createSealer(newKeys).openStream(streamOf(sealedByOld, 9_999), "job-1"));
    expect((error as Error).message).toContain(`key ${oldKeys.primary.id}, which is not configured`);
  });

  it("tells the two formats apart: a sealed value is not a sealed stream and vice versa", async () => {
    const value = sealer.seal(Buffer.alloc(100), "job-1");
    const { error } = await drain(sealer.openStream(streamOf(value, 50), "job-1"));
    expect((error as Error).message).toMatch(/not a sealed stream/);
    const stream = await sealedStreamOf(rotatedKeys, Buffer.alloc(100), "job-1");
    expect(sealErrorOf(() => sealer.open(stream, "job-1")).message).toMatch(/not a sealed value/);
    const plaintext = await drain(sealer.openStream(streamOf(Buffer.from('{"legacy":"plaintext body"}'), 50), "job-1"));
    expect(plaintext.error).toBeInstanceOf(SealError);
  });

  it("still opens a stream sealed by an earlier build (the format is stable)", async () => {
    const keys = keysOf("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=");
    const golden = Buffer.from("9fcGIQ3ZunI+MbT7FKgJPcHCaCjvzkcvop6SAjC7q+HMkK1Ek7w8dIC21K/ugfbCPPMqvjoLoY8x", "base64");
    expect((await collect(createSealer(keys).openStream(streamOf(golden, 3), "job-2"))).toString()).toBe("golden stream");
  });

  it("pulls from its source only as its output is read (backpressure), and cancels the source", async () => {
    let pulledBytes = 0;
    let canceled = false;
    const endless = new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          controller.enqueue(new Uint8Array(1024).fill(7));
          pulledBytes += 1024;
        },
        cancel() {
          canceled = true;
        },
      },
      { highWaterMark: 0 },
    );
    const opened = sealer.openStream(sealer.sealStream(endless, "job-1"), "job-1");
    const reader = opened.getReader();
    const first = await reader.read();
    expect(first.value).toHaveLength(SEG);
    expect(Buffer.from(first.value as Uint8Array).every((b) => b === 7)).toBe(true);
    // Give any eager read-ahead time to run: it must stop after a few segments.
    for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setImmediate(resolve));
    expect(pulledBytes).toBeLessThanOrEqual(6 * SEG);
    await reader.cancel();
    expect(canceled).toBe(true);
  });

  it("passes on a source's error", async () => {
    let sent = 0;
    const failing = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 3 * SEG) {
          controller.error(new Error("backend reset the connection"));
          return;
        }
        controller.enqueue(new Uint8Array(SEG / 4));
        sent += SEG / 4;
      },
    });
    const { error } = await drain(sealer.sealStream(failing, "job-1"));
    expect((error as Error).message).toBe("backend reset the connection");
  });
});

describe("owner tags", () => {
  it("are 43 base64url characters, the same for the same values and keys", () => {
    const tag = ownerTag(newKeys, ["Bearer abc"]);
    expect(tag).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(ownerTag(keysOf(newLine), ["Bearer abc"])).toBe(tag);
    expect(ownerTag(keysOf("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="), ["Bearer abc"])).toBe(
      "GQhtJK6kyPmq0fnNYFBUcUSLeIdzBIJbouta9VcZMU8",
    );
  });

  it("differ for other values, other keys, and other splits of the same characters", () => {
    const tags = [
      ownerTag(newKeys, ["Bearer abc"]),
      ownerTag(newKeys, ["Bearer abd"]),
      ownerTag(oldKeys, ["Bearer abc"]),
      ownerTag(newKeys, ["ab", "c"]),
      ownerTag(newKeys, ["a", "bc"]),
      ownerTag(newKeys, ["abc"]),
      ownerTag(newKeys, ["abc", ""]),
      ownerTag(newKeys, []),
      ownerTag(newKeys, [""]),
    ];
    expect(new Set(tags).size).toBe(tags.length);
  });

  it("are not a plain hash of the values", () => {
    const plain = createHash("sha256").update("Bearer abc").digest("base64url");
    expect(ownerTag(newKeys, ["Bearer abc"])).not.toBe(plain);
  });

  it("match the same caller across a rotation while the old key is listed", () => {
    const tag = ownerTag(oldKeys, ["Bearer abc", "tenant-1"]);
    expect(ownerMatches(oldKeys, tag, ["Bearer abc", "tenant-1"])).toBe(true);
    expect(ownerMatches(rotatedKeys, tag, ["Bearer abc", "tenant-1"])).toBe(true);
    expect(ownerMatches(newKeys, tag, ["Bearer abc", "tenant-1"])).toBe(false);
    expect(ownerMatches(rotatedKeys, ownerTag(rotatedKeys, ["x"]), ["x"])).toBe(true);
  });

  it("do not match another caller, or a malformed tag", () => {
    const tag = ownerTag(rotatedKeys, ["Bearer abc"]);
    expect(ownerMatches(rotatedKeys, tag, ["Bearer abd"])).toBe(false);
    expect(ownerMatches(rotatedKeys, tag, ["Bearer abc", ""])).toBe(false);
    for (const bad of ["", tag.slice(1), `${tag}A`, tag.replace(/^./, (c) => (c === "A" ? "B" : "A")), "é".repeat(43)]) {
      expect(ownerMatches(rotatedKeys, bad, ["Bearer abc"]), bad).toBe(false);
    }
  });
});

describe("idempotent job ids", () => {
  const parts = ["prefix", "reports", "Bearer abc"];

  it("are the same for the same scope, key and server keys, on any replica", () => {
    const id = idempotentJobId(newKeys, parts, "key-1");
    expect(idempotentJobId(keysOf(newLine), [...parts], "key-1")).toBe(id);
    expect(idempotentJobId(keysOf("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="), ["prefix", "route"], "key-1")).toBe(
      "KysZspFiPfwtL-dt0tx3ZPGtL5dD",
    );
  });

  it("are tagged ids that pass the tag check, and differ from the old unkeyed hash", () => {
    const id = idempotentJobId(newKeys, parts, "key-1");
    expect(isTaggedJobId(id)).toBe(true);
    expect(hasValidTag(newKeys, id)).toBe(true);
    expect(hasValidTag(rotatedKeys, id)).toBe(true);
    expect(hasValidTag(oldKeys, id)).toBe(false);
    // The unkeyed hash ids were made with before: SHA-256 of the parts and the key, NUL-separated.
    const unkeyed = createHash("sha256");
    for (const part of [...parts, "key-1"]) unkeyed.update(part).update("\0");
    expect(Buffer.from(id, "base64url").subarray(0, 16).toString("base64url")).not.toBe(unkeyed.digest().subarray(0, 16).toString("base64url"));
  });

  it("differ across server keys, keys, scopes and splits", () => {
    const ids = [
      idempotentJobId(newKeys, parts, "key-1"),
      idempotentJobId(oldKeys, parts, "key-1"),
      idempotentJobId(newKeys, parts, "key-2"),
      idempotentJobId(newKeys, ["prefix", "reports", "Bearer abd"], "key-1"),
      idempotentJobId(newKeys, ["a", "b"], "c"),
      idempotentJobId(newKeys, ["a"], "bc"),
      idempotentJobId(newKeys, ["ab"], "c"),
    ];
    expect(new Set(ids).size).toBe(ids.length);
    // Rotation changes the primary key, so the id: that is what the candidates are for.
    expect(idempotentJobId(rotatedKeys, parts, "key-1")).toBe(ids[0]);
  });

  it("lists, after a rotation, the id each listed key gave, primary first", () => {
    const before = idempotentJobId(oldKeys, parts, "key-1");
    const candidates = idempotentJobIdCandidates(rotatedKeys, parts, "key-1");
    expect(candidates).toEqual([idempotentJobId(newKeys, parts, "key-1"), before]);
    for (const id of candidates) expect(hasValidTag(rotatedKeys, id)).toBe(true);
  });
});

describe("tagged job ids", () => {
  it("are 28 URL-safe characters, unique across many pool refills, each with a valid tag", () => {
    const ids = Array.from({ length: 2_000 }, () => createTaggedJobId(newKeys));
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) {
      expect(id).toMatch(/^[A-Za-z0-9_-]{28}$/);
      expect(isTaggedJobId(id)).toBe(true);
      expect(isLegacyJobId(id)).toBe(false);
      expect(hasValidTag(newKeys, id)).toBe(true);
    }
  });

  it("never start with - or _, so a command line never reads one as an option (slowlane jobs show <id>)", () => {
    const ids = Array.from({ length: 5_000 }, () => createTaggedJobId(newKeys));
    expect(ids.filter((id) => id.startsWith("-") || id.startsWith("_"))).toEqual([]);
    const idempotent = Array.from({ length: 2_000 }, (_, i) => idempotentJobId(newKeys, ["route", "owner"], `key-${i}`));
    expect(idempotent.filter((id) => id.startsWith("-") || id.startsWith("_"))).toEqual([]);
  });

  it("carry a tag that is the keyed hash of the random part (stable format)", () => {
    const keys = keysOf("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=");
    expect(toTaggedJobId(keys.primary, Buffer.alloc(16))).toBe("AAAAAAAAAAAAAAAAAAAAADUOxtFV");
    expect(() => toTaggedJobId(keys.primary, Buffer.alloc(15))).toThrow(RangeError);
  });

  it("fail the tag check when any character changes, or under other keys", () => {
    const id = createTaggedJobId(rotatedKeys);
    for (let i = 0; i < id.length; i += 1) {
      const changed = id.slice(0, i) + (id[i] === "A" ? "B" : "A") + id.slice(i + 1);
      expect(hasValidTag(rotatedKeys, changed), `character ${i}`).toBe(false);
    }
    expect(hasValidTag(oldKeys, id)).toBe(false);
    expect(hasValidTag(keysOf(generateKeyLine()), id)).toBe(false);
  });

  it("stay valid across a rotation while the old key is listed", () => {
    const id = createTaggedJobId(oldKeys);
    expect(hasValidTag(rotatedKeys, id)).toBe(true);
    expect(hasValidTag(newKeys, id)).toBe(false);
    const fresh = createTaggedJobId(rotatedKeys);
    expect(hasValidTag(newKeys, fresh)).toBe(true);
    expect(hasValidTag(oldKeys, fresh)).toBe(false);
  });

  it("are told apart from legacy ids by shape, and legacy ids never pass the tag check", () => {
    const legacy = legacyJobId();
    expect(isLegacyJobId(legacy)).toBe(true);
    expect(isTaggedJobId(legacy)).toBe(false);
    expect(hasValidTag(rotatedKeys, legacy)).toBe(false);
  });

  it("reject every other shape", () => {
    const id = createTaggedJobId(newKeys);
    const bad = ["", "a", id.slice(1), `${id}A`, `${id.slice(0, 27)}=`, `${id.slice(0, 27)}+`, `${id.slice(0, 27)}/`, "..%2F", "*", ">", "x".repeat(5000)];
    for (const value of bad) {
      expect(isTaggedJobId(value), value).toBe(false);
      expect(hasValidTag(newKeys, value), value).toBe(false);
    }
    for (const value of ["", "A".repeat(21), "A".repeat(23), `${"A".repeat(21)}=`, `${"A".repeat(21)}.`]) {
      expect(isLegacyJobId(value), value).toBe(false);
    }
  });
});
