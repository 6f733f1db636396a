/**
 * Owner binding: a job remembers who submitted it as a keyed hash of the caller's identity (the
 * request headers and cookies a route's `owner` names), never the values themselves. A status,
 * result or cancel request is let through only when it presents the same identity.
 */
import { ownerTag, ownerMatches } from "./keyed-hash.js";
import type { ServerKeys } from "./server-keys.js";

/** Who a job belongs to: which headers/cookies identified its caller, and the keyed hash of their values. */
export interface JobOwner {
  /** The route's `owner` list when the job was accepted: lower-case header names or `cookie:<name>`. */
  readonly by: readonly string[];
  /** `ownerTag` of the values (base64url, 43 characters). */
  readonly tag: string;
}

const COOKIE_PREFIX = "cookie:";

/** Every value of a header (any case), in order, joined with a newline (which no header value holds). */
function headerValue(rawHeaders: readonly string[], name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() !== name) continue;
    const next = rawHeaders[i + 1] as string;
    value = value === undefined ? next : `${value}\n${next}`;
  }
  return value;
}

/** The first value of the cookie `name` (case-sensitive, as cookies are) in the request's Cookie headers. */
function cookieValue(rawHeaders: readonly string[], name: string): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() !== "cookie") continue;
    for (const pair of (rawHeaders[i + 1] as string).split(";")) {
      const eq = pair.indexOf("=");
      if (eq !== -1 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/**
 * The caller's identity under `by`: for each entry, its name and `=value`, or `""` when absent (so
 * an absent value and an empty one differ). `undefined` when none of them is present.
 */
export function identityOf(by: readonly string[], rawHeaders: readonly string[]): string[] | undefined {
  const parts: string[] = [];
  let present = false;
  for (const entry of by) {
    const value = entry.startsWith(COOKIE_PREFIX) ? cookieValue(rawHeaders, entry.slice(COOKIE_PREFIX.length)) : headerValue(rawHeaders, entry);
    if (value !== undefined) present = true;
    parts.push(entry, value === undefined ? "" : `=${value}`);
  }
  return present ? parts : undefined;
}

/**
 * The owner of a job accepted with these request headers under the route's `owner` list, or
 * `undefined` (an unbound job) when the list is empty or the request carries none of it.
 */
export function bindOwner(keys: ServerKeys, by: readonly string[], rawHeaders: readonly string[]): JobOwner | undefined {
  const identity = identityOf(by, rawHeaders);
  return identity === undefined ? undefined : { by: [...by], tag: ownerTag(keys, identity) };
}

/**
 * Whether a request may see a job: always for an unbound job; else when its headers give the same
 * identity under the job's own `by` list (the one in force when it was accepted), under any key.
 */
export function isOwner(keys: ServerKeys, owner: JobOwner | undefined, rawHeaders: readonly string[]): boolean {
  if (owner === undefined) return true;
  const identity = identityOf(owner.by, rawHeaders);
  return identity !== undefined && ownerMatches(keys, owner.tag, identity);
}

/** Whether a value read back from storage is a {@link JobOwner}. */
export function isJobOwner(value: unknown): value is JobOwner {
  if (typeof value !== "object" || value === null) return false;
  const owner = value as Record<string, unknown>;
  return Array.isArray(owner.by) && owner.by.every((entry) => typeof entry === "string") && typeof owner.tag === "string";
}
