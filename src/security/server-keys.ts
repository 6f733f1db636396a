/**
 * The server's secret keys: read from a key file (one base64 key per line, newest first) or, without
 * one, a random key created once in a NATS KV bucket and shared by every replica. The first key
 * encrypts and signs; every key still decrypts and verifies, which is how keys are rotated.
 *
 * Raw key bytes are never used directly: each use (encryption, owner tags, job id tags...) gets its
 * own sub-key derived with HKDF-SHA-256, so no key material serves two algorithms.
 */
import { createHash, createSecretKey, hkdfSync, randomBytes } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { ConfigError } from "../errors.js";
import type { ConfigProblem } from "../errors.js";
import { readBounded } from "../shared/read-bounded.js";

/** Bytes in a server key (AES-256 and HMAC-SHA-256 strength). */
export const KEY_BYTES = 32;

/** One server key. `bytes` is not enumerable, so logging or JSON-encoding a key never prints it. */
export interface ServerKey {
  /** 8 hex characters naming the key in ciphertexts; a hash of the key, safe to log. */
  readonly id: string;
  readonly bytes: Buffer;
}

/** The keys in force: `primary` encrypts and signs, every key in `all` (primary first) decrypts and verifies. */
export interface ServerKeys {
  readonly primary: ServerKey;
  readonly all: readonly ServerKey[];
}

/**
 * The HKDF `info` labels, one per use of a key. The version suffix lets a future format change
 * derive fresh sub-keys instead of reusing these.
 */
export const KeyPurposes = {
  Encrypt: "slowlane encrypt v1",
  /** The per-stream key of a sealed stream is derived from the server key with this label and a random salt. */
  Stream: "slowlane stream v1",
  Owner: "slowlane owner v1",
  JobId: "slowlane id v1",
  Idempotency: "slowlane idempotency v1",
  /** What an idempotent request was (method, URL, body), to tell a true repeat from a reused key. */
  Fingerprint: "slowlane fingerprint v1",
} as const;

export type KeyPurpose = (typeof KeyPurposes)[keyof typeof KeyPurposes];

const KEY_ID_LABEL = "slowlane key id v1\0";
const CONFIG_PATH = "security.keyFile";
const KEYGEN_HINT = "make one with: slowlane keygen";
/** A key file holds a few short lines; anything this large is the wrong path (`/dev/zero`, a log file). */
const MAX_KEY_FILE_BYTES = 64 * 1024;
/** The KV key under which the shared server key is kept. */
const SHARED_KEY_NAME = "server-key";
/** How long to wait for a key another replica just created to become readable (a follower may lag). */
const SHARED_KEY_READ_TIMEOUT_MS = 5_000;
const SHARED_KEY_READ_INTERVAL_MS = 50;
/** Standard or URL-safe base64, padded or not; `Buffer.from` alone would silently skip bad characters. */
const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/;

/** A fresh random key as a base64 line: what `slowlane keygen` prints for a key file. */
export function generateKeyLine(): string {
  return randomBytes(KEY_BYTES).toString("base64");
}

function toKeyId(bytes: Uint8Array): string {
  return createHash("sha256").update(KEY_ID_LABEL).update(bytes).digest().subarray(0, 4).toString("hex");
}

function toServerKey(bytes: Uint8Array): ServerKey {
  // A private copy, so a caller reusing its buffer cannot change the key underneath us.
  const copy = Buffer.from(bytes);
  const key = { id: toKeyId(copy) };
  Object.defineProperty(key, "bytes", { value: copy, enumerable: false });
  return Object.freeze(key) as ServerKey;
}

function toServerKeys(keyBytes: readonly Uint8Array[]): ServerKeys {
  const all = Object.freeze(keyBytes.map(toServerKey));
  const primary = all[0];
  if (primary === undefined) throw new RangeError("at least one key is needed");
  return Object.freeze({ primary, all });
}

const derived = new WeakMap<ServerKey, Map<string, KeyObject>>();

/**
 * The sub-key of `key` for one purpose: HKDF-SHA-256 with `purpose` as info, 32 bytes, as a KeyObject
 * (which never prints its bytes). Cached per key, since tags are computed on hot paths.
 */
export function deriveKey(key: ServerKey, purpose: KeyPurpose): KeyObject {
  let byPurpose = derived.get(key);
  if (byPurpose === undefined) {
    byPurpose = new Map();
    derived.set(key, byPurpose);
  }
  let sub = byPurpose.get(purpose);
  if (sub === undefined) {
    sub = createSecretKey(Buffer.from(hkdfSync("sha256", key.bytes, Buffer.alloc(0), purpose, KEY_BYTES)));
    byPurpose.set(purpose, sub);
  }
  return sub;
}

/** The bytes of one key line, or why it is not a key. Messages never quote the line: it may be a real key with a typo. */
function decodeKeyLine(text: string): Buffer | string {
  if (!BASE64.test(text)) {
    return `not base64 (only A-Z, a-z, 0-9, +, / and = padding, no spaces or comments after the key); ${KEYGEN_HINT}`;
  }
  const bytes = Buffer.from(text, "base64");
  if (bytes.length !== KEY_BYTES) return `not base64 of ${KEY_BYTES} bytes (got ${bytes.length} bytes); ${KEYGEN_HINT}`;
  if (bytes.every((b) => b === 0)) return `all ${KEY_BYTES} bytes are zero, not a random key; ${KEYGEN_HINT}`;
  return bytes;
}

/**
 * Parses the text of a key file: one base64 32-byte key per line, blank lines and `#` comments
 * ignored, the first key primary. Throws a {@link ConfigError} listing every bad line (with its
 * number, never its content), or saying the file has no key.
 */
export function parseServerKeys(text: string, file: string): ServerKeys {
  const problems: ConfigProblem[] = [];
  const keys: Buffer[] = [];
  const lineOfId = new Map<string, { line: number; bytes: Buffer }>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const trimmed = raw.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const decoded = decodeKeyLine(trimmed);
    if (typeof decoded === "string") {
      problems.push({ path: CONFIG_PATH, message: `line ${line}: ${decoded}`, line });
      return;
    }
    // Ciphertexts name their key by id, so two keys with one id would make that name ambiguous.
    const id = toKeyId(decoded);
    const earlier = lineOfId.get(id);
    if (earlier !== undefined) {
      const message = earlier.bytes.equals(decoded)
        ? `line ${line}: the same key as line ${earlier.line} (remove one)`
        : `line ${line}: its key id collides with line ${earlier.line}'s; replace it (${KEYGEN_HINT})`;
      problems.push({ path: CONFIG_PATH, message, line });
      return;
    }
    lineOfId.set(id, { line, bytes: decoded });
    keys.push(decoded);
  });
  if (problems.length === 0 && keys.length === 0) {
    problems.push({ path: CONFIG_PATH, message: `no key in the file (it is empty or only comments); ${KEYGEN_HINT}` });
  }
  if (problems.length > 0) throw new ConfigError(file, problems);
  return toServerKeys(keys);
}

/** Reads and parses a key file (see {@link parseServerKeys}); an unreadable file is a {@link ConfigError} too. */
export function loadServerKeys(file: string): ServerKeys {
  let text: string | undefined;
  try {
    text = readBounded(file, MAX_KEY_FILE_BYTES);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const message = code === "ENOENT" ? `key file not found; ${KEYGEN_HINT} > FILE` : `cannot read the key file (${code ?? "unknown error"})`;
    throw new ConfigError(file, [{ path: CONFIG_PATH, message }], { cause });
  }
  if (text === undefined) {
    const message = `larger than ${MAX_KEY_FILE_BYTES / 1024} KiB: not a key file (is the path right?)`;
    throw new ConfigError(file, [{ path: CONFIG_PATH, message }]);
  }
  return parseServerKeys(text, file);
}

function isAlreadyThere(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

async function readSharedKey(kv: KV, bucket: string): Promise<Uint8Array> {
  const deadline = Date.now() + SHARED_KEY_READ_TIMEOUT_MS;
  for (;;) {
    const entry = await kv.get(SHARED_KEY_NAME);
    if (entry !== null && entry.operation === "PUT") return entry.value;
    // Our create lost to another replica's, so the key exists; a direct get served by a lagging
    // follower may not see it yet.
    if (Date.now() > deadline) {
      throw new Error(`the shared server key "${SHARED_KEY_NAME}" in KV bucket ${bucket} exists but cannot be read`);
    }
    await new Promise((resolve) => setTimeout(resolve, SHARED_KEY_READ_INTERVAL_MS));
  }
}

/**
 * The server keys when no key file is configured: one random key, created once in `kv` by whichever
 * replica comes first and read back by the others, so every replica uses the same key.
 *
 * `kv` must be a bucket of its own whose entries never expire: a lost key makes everything sealed
 * with it unreadable. A bucket with a TTL is refused. Anyone who can read that bucket can read the key.
 */
export async function loadOrCreateSharedKey(kv: KV): Promise<ServerKeys> {
  const status = await kv.status();
  if (status.ttl > 0) {
    throw new Error(
      `KV bucket ${status.bucket} expires entries after ${status.ttl} ms; the shared server key needs a bucket without a TTL`,
    );
  }
  const fresh = randomBytes(KEY_BYTES);
  try {
    await kv.create(SHARED_KEY_NAME, fresh);
    return toServerKeys([fresh]);
  } catch (err) {
    if (!isAlreadyThere(err)) throw err;
  }
  const stored = await readSharedKey(kv, status.bucket);
  if (stored.length !== KEY_BYTES) {
    throw new Error(
      `the shared server key "${SHARED_KEY_NAME}" in KV bucket ${status.bucket} holds ${stored.length} bytes, not ${KEY_BYTES}; ` +
        "it was changed by hand (data sealed with the original key cannot be read without it)",
    );
  }
  return toServerKeys([stored]);
}
