/**
 * Keyed hashes (HMAC-SHA-256 under sub-keys of the server key) of values that must not be guessable
 * or forgeable by clients: the owner tag that binds a job to its caller's identity, and the job id
 * an Idempotency-Key names. A plain hash would let anyone who knows (or guesses) the inputs compute
 * them; the key makes them slowlane's alone.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { JOB_ID_RANDOM_BYTES, toTaggedJobId } from "./job-ids.js";
import { deriveKey, KeyPurposes } from "./server-keys.js";
import type { KeyPurpose, ServerKey, ServerKeys } from "./server-keys.js";

/**
 * HMAC of `values`, each preceded by its UTF-8 length (4 bytes, big-endian): the encoding is
 * unambiguous, so `["ab", "c"]` and `["a", "bc"]` never collide, whatever the values contain.
 */
function keyedHash(key: ServerKey, purpose: KeyPurpose, values: readonly string[]): Buffer {
  const hmac = createHmac("sha256", deriveKey(key, purpose));
  const length = Buffer.alloc(4);
  for (const value of values) {
    const bytes = Buffer.from(value, "utf8");
    length.writeUInt32BE(bytes.length, 0);
    hmac.update(length).update(bytes);
  }
  return hmac.digest();
}

/**
 * The owner tag of a job: HMAC-SHA-256 of `values` (e.g. the caller's Authorization header) under
 * the primary key's owner sub-key, base64url (43 characters). Store it with the job; check callers
 * with {@link ownerMatches}.
 */
export function ownerTag(keys: ServerKeys, values: readonly string[]): string {
  return keyedHash(keys.primary, KeyPurposes.Owner, values).toString("base64url");
}

/**
 * Whether `tag` is the owner tag of `values` under any of `keys.all` (tags made before a rotation
 * still match while the old key is listed). Constant-time per key; a malformed tag is simply false.
 */
export function ownerMatches(keys: ServerKeys, tag: string, values: readonly string[]): boolean {
  const given = Buffer.from(tag, "utf8");
  let matches = false;
  for (const key of keys.all) {
    const expected = Buffer.from(keyedHash(key, KeyPurposes.Owner, values).toString("base64url"), "utf8");
    // The length is not secret (every tag has 43 characters); only the content is compared in constant time.
    if (expected.length === given.length && timingSafeEqual(expected, given)) matches = true;
  }
  return matches;
}

/** The id under one key: both its random part and its tag come from `key`, as when that key was primary. */
function idempotentJobIdWith(key: ServerKey, parts: readonly string[], idempotencyKey: string): string {
  const random = keyedHash(key, KeyPurposes.Idempotency, [...parts, idempotencyKey]).subarray(0, JOB_ID_RANDOM_BYTES);
  return toTaggedJobId(key, random);
}

/**
 * The job id an `Idempotency-Key` names within `parts` (its scope: stream prefix, route, the caller's
 * credentials...): a keyed HMAC under the primary key, in the tagged id shape. The same request with
 * the same key gives the same id on every replica; without the server key nobody can compute it.
 */
export function idempotentJobId(keys: ServerKeys, parts: readonly string[], key: string): string {
  return idempotentJobIdWith(keys.primary, parts, key);
}

/**
 * The ids {@link idempotentJobId} gave for this key under each of `keys.all`, primary first. After
 * a rotation, a retry of a request first made under the old key is found under the second id.
 */
export function idempotentJobIdCandidates(keys: ServerKeys, parts: readonly string[], key: string): string[] {
  return keys.all.map((serverKey) => idempotentJobIdWith(serverKey, parts, key));
}

/** A keyed hash of one request, fed as its body streams in. */
export interface FingerprintHasher {
  /** Adds body bytes, in order. */
  update(chunk: Uint8Array): void;
  /** The fingerprint, base64url (43 characters); call once, after the last byte. */
  digest(): string;
}

/**
 * What an idempotent request was: HMAC-SHA-256 of its method, URL and body under `key`'s
 * fingerprint sub-key. Method and URL are length-prefixed and the body comes last, so no two
 * requests share an encoding. Use the key that made the job's id (the primary one for a new job,
 * the matching candidate's for a repeat), so fingerprints stay comparable across a rotation.
 */
export function createFingerprintHasher(key: ServerKey, method: string, url: string): FingerprintHasher {
  const hmac = createHmac("sha256", deriveKey(key, KeyPurposes.Fingerprint));
  const length = Buffer.alloc(4);
  for (const value of [method, url]) {
    const bytes = Buffer.from(value, "utf8");
    length.writeUInt32BE(bytes.length, 0);
    hmac.update(length).update(bytes);
  }
  return {
    update: (chunk) => void hmac.update(chunk),
    digest: () => hmac.digest().toString("base64url"),
  };
}

/** Whether two fingerprints are the same, in constant time. */
export function fingerprintsMatch(a: string, b: string): boolean {
  const left = Buffer.from(a, "utf8");
  const right = Buffer.from(b, "utf8");
  return left.length === right.length && timingSafeEqual(left, right);
}
