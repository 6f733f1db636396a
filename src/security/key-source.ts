/**
 * Where a process's server keys come from, decided once at start: a key file (`SLOWLANE_KEY_FILE`,
 * else `security.keyFile`) turns on encryption at rest; without one, owner tags, idempotent ids and
 * id tags use a random key kept in NATS and shared by every replica, and storage is plaintext.
 */
import type { Config } from "../config/index.js";
import { createSealer } from "./seal.js";
import type { Sealer } from "./seal.js";
import { loadServerKeys } from "./server-keys.js";
import type { ServerKeys } from "./server-keys.js";

/** The environment variable naming the key file; it wins over `security.keyFile`. */
export const KEY_FILE_ENV = "SLOWLANE_KEY_FILE";

/** The keys in force, and whether what is stored is sealed with them. */
export interface ServerSecrets {
  readonly keys: ServerKeys;
  /** Seals what slowlane stores about requests and responses; `undefined` without a key file (plaintext). */
  readonly sealer: Sealer | undefined;
}

/** The key file to use: `SLOWLANE_KEY_FILE` when set and not empty, else `security.keyFile`, else none. */
export function keyFileOf(config: Pick<Config, "security">, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = env[KEY_FILE_ENV]?.trim();
  return fromEnv ? fromEnv : config.security.keyFile;
}

/** Reads the key file; throws a ConfigError naming every bad line. Storage is encrypted with its first key. */
export function loadKeyFileSecrets(file: string): ServerSecrets {
  const keys = loadServerKeys(file);
  return { keys, sealer: createSealer(keys) };
}

/** The secrets of a process without a key file: the shared key signs, nothing is sealed. */
export function sharedKeySecrets(keys: ServerKeys): ServerSecrets {
  return { keys, sealer: undefined };
}

/**
 * The one line the start-up log and `slowlane check` print about storage. Key ids are hashes of the
 * keys, safe to show; the keys never are.
 */
export function describeStorage(file: string | undefined, keys: ServerKeys | undefined, keysBucket: string): string {
  if (file === undefined) {
    return (
      `storage: NOT encrypted (no key file; set ${KEY_FILE_ENV} or security.keyFile to encrypt); ` +
      `owner tags and idempotent ids use a random key kept in NATS bucket ${keysBucket}`
    );
  }
  const count = keys ? `, ${keys.all.length} key${keys.all.length === 1 ? "" : "s"}, primary ${keys.primary.id}` : "";
  return `storage: encrypted at rest (AES-256-GCM) with key file ${file}${count}`;
}
