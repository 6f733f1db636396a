/** Server keys for tests: a fixed set for ids made outside slowlane, and key files on disk. */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyLine, parseServerKeys } from "../../src/security/server-keys.js";
import type { ServerKeys } from "../../src/security/server-keys.js";

/** Keys for tests that make job ids or tags themselves, with no slowlane process to agree with. */
export const TEST_KEYS: ServerKeys = parseServerKeys(generateKeyLine(), "test-keys");

/** A key file holding `lines` (base64 keys, newest first) in a fresh temp directory; returns its path. */
export function writeKeyFile(lines: readonly string[]): string {
  const file = join(mkdtempSync(join(tmpdir(), "slowlane-keys-")), "keys");
  writeFileSync(file, `${lines.join("\n")}\n`, { mode: 0o600 });
  return file;
}

/** A job id of the shape slowlane minted before tags (22 characters), as an upgraded deployment still holds. */
export function legacyJobId(): string {
  return randomBytes(16).toString("base64url");
}
