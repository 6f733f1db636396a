/**
 * Job ids. New ids are tagged (`security/job-ids.ts`): 16 random bytes and a 5-byte keyed tag,
 * 28 URL-safe characters, so an id slowlane did not mint is recognised without asking NATS. Ids
 * minted before tags (22 characters, 16 random bytes) stay valid until their jobs expire.
 */
import { createTaggedJobId, hasValidTag, isLegacyJobId, isTaggedJobId } from "../security/job-ids.js";
import type { ServerKeys } from "../security/server-keys.js";

/** A fresh job id: 128 random bits and their tag under the primary key, 28 URL-safe characters. */
export function createJobId(keys: ServerKeys): string {
  return createTaggedJobId(keys);
}

/**
 * Whether `value` has the shape of a job id (tagged or legacy): safe in a subject or a KV key, so
 * `..%2F`, wildcards and long junk never pass. Says nothing of who made it: see {@link isJobId}.
 */
export function isJobIdShape(value: string): boolean {
  return isTaggedJobId(value) || isLegacyJobId(value);
}

/**
 * Guards every id that comes from a client: a tagged id whose tag one of `keys` made (a made-up
 * id fails here, in memory), or a legacy id (which only a lookup can tell).
 */
export function isJobId(keys: ServerKeys, value: string): boolean {
  return isLegacyJobId(value) || hasValidTag(keys, value);
}
