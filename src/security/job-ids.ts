/**
 * Job ids slowlane can recognise without asking NATS: 16 random bytes followed by a 5-byte tag, an
 * HMAC of those bytes under the server key, base64url (28 characters). A made-up or mistyped id
 * fails the tag check in microseconds, so guessing ids costs the guesser, not JetStream.
 *
 * Ids made before tags existed (16 random bytes, 22 characters) keep working where the lead allows
 * them; {@link isLegacyJobId} recognises their shape.
 */
import { createHmac, randomFillSync, timingSafeEqual } from "node:crypto";
import { LRUCache } from "lru-cache";
import { deriveKey, KeyPurposes } from "./server-keys.js";
import type { ServerKey, ServerKeys } from "./server-keys.js";

/** Random bytes in an id: 128 bits, unguessable. */
export const JOB_ID_RANDOM_BYTES = 16;
/** Tag bytes: a random id passes by chance once in 2^40; enough to turn away guesses before any lookup. */
export const JOB_ID_TAG_BYTES = 5;
const TAGGED_BYTES = JOB_ID_RANDOM_BYTES + JOB_ID_TAG_BYTES;

/** 21 bytes are exactly 28 base64url characters, with no padding and no spare bits. */
const TAGGED_JOB_ID = /^[A-Za-z0-9_-]{28}$/;
const LEGACY_JOB_ID = /^[A-Za-z0-9_-]{22}$/;

/** Random bytes drawn 4 KiB at a time, as `src/jobs/job-id.ts` does: one CSPRNG call per 256 ids. */
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

function computeTag(key: ServerKey, random: Uint8Array): Buffer {
  return createHmac("sha256", deriveKey(key, KeyPurposes.JobId)).update(random).digest().subarray(0, JOB_ID_TAG_BYTES);
}

/**
 * The tagged id whose random part is `random` (16 bytes), tagged with `key` (the primary key for
 * any id made now). For {@link createTaggedJobId} and for ids derived from other secrets (`idempotentJobId`).
 */
export function toTaggedJobId(key: ServerKey, random: Uint8Array): string {
  if (random.byteLength !== JOB_ID_RANDOM_BYTES) throw new RangeError(`a job id's random part is ${JOB_ID_RANDOM_BYTES} bytes`);
  // The first byte's top bit is cleared, so an id never starts with "-" or "_" (base64url 62, 63): an id
  // that starts with "-" reads as an option on a command line (`slowlane jobs show -w…`). 127 random bits remain.
  const part = Buffer.from(random);
  part[0] = (part[0] as number) & 0x7f;
  return Buffer.concat([part, computeTag(key, part)]).toString("base64url");
}

/** A fresh job id: 16 random bytes and their tag under the primary key, 28 URL-safe characters. */
export function createTaggedJobId(keys: ServerKeys): string {
  if (poolOffset + JOB_ID_RANDOM_BYTES > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const random = pool.subarray(poolOffset, poolOffset + JOB_ID_RANDOM_BYTES);
  poolOffset += JOB_ID_RANDOM_BYTES;
  return toTaggedJobId(keys.primary, random);
}

/**
 * Whether `value` has the shape of a tagged id (28 base64url characters). Shape only: safe to put
 * in a subject or a KV key, but see {@link hasValidTag} for whether slowlane made it.
 */
export function isTaggedJobId(value: string): boolean {
  return TAGGED_JOB_ID.test(value);
}

/** Whether `value` has the shape of an id made before tags (22 base64url characters, as `createJobId` makes). */
export function isLegacyJobId(value: string): boolean {
  return LEGACY_JOB_ID.test(value);
}

/**
 * Whether `id` is a tagged id whose tag one of `keys.all` made: ids made before a key rotation
 * stay valid while the old key is listed. Compares in constant time.
 */
export function hasValidTag(keys: ServerKeys, id: string): boolean {
  const known = verifiedIds(keys);
  if (known.has(id)) return true;
  if (!isTaggedJobId(id)) return false;
  const bytes = Buffer.from(id, "base64url");
  if (bytes.length !== TAGGED_BYTES) return false;
  const random = bytes.subarray(0, JOB_ID_RANDOM_BYTES);
  const tag = bytes.subarray(JOB_ID_RANDOM_BYTES);
  let valid = false;
  // Every key is tried even after a match, so the time taken does not depend on which key matched.
  for (const key of keys.all) {
    if (timingSafeEqual(computeTag(key, random), tag)) valid = true;
  }
  if (valid) known.set(id, true);
  return valid;
}

/** Ids recently found valid, per set of keys (a rotation makes a new set): most kept. */
const VERIFIED_IDS_KEPT = 10_000;
const verified = new WeakMap<ServerKeys, LRUCache<string, true>>();

/**
 * The ids found valid under `keys` lately. A client polls its job's status URL again and again; an
 * HMAC per poll was about a twelfth of a status poll's CPU. Only ids that passed are kept, so a
 * lookup here tells a guesser nothing it did not know; a new set of keys starts empty, so an id
 * whose key was dropped stops passing at once.
 */
function verifiedIds(keys: ServerKeys): LRUCache<string, true> {
  let known = verified.get(keys);
  if (known === undefined) {
    known = new LRUCache<string, true>({ max: VERIFIED_IDS_KEPT });
    verified.set(keys, known);
  }
  return known;
}
