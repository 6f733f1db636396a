/**
 * Which job an accepted request is: a fresh tagged id, or, with an `Idempotency-Key`, the id the key
 * names for this route and caller (a keyed HMAC, so nobody without the server key can compute it).
 * After a key rotation, a repeat of a request first made under the old key is found under the id
 * that key gave.
 */
import type { IncomingMessage } from "node:http";
import type { RouteConfig } from "../config/index.js";
import { forgetJob } from "../jobs/cancel.js";
import { createJobId } from "../jobs/job-id.js";
import { findQueuedRequest } from "../jobs/queue.js";
import { isExpired, JobStatus } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { idempotentJobIdCandidates } from "../security/keyed-hash.js";
import type { ServerKey, ServerKeys } from "../security/server-keys.js";
import { idempotencyScopeOf } from "./accept-request.js";

/** The job an idempotent request names already exists (within its ttl). */
export interface ExistingJob {
  readonly kind: "existing";
  readonly id: string;
  readonly status: string;
  /** The first request's fingerprint, to compare this one with; absent for jobs made before fingerprints. */
  readonly fingerprint: string | undefined;
  /** The key that made the id: this request's fingerprint is computed with it. */
  readonly key: ServerKey;
  /** Its claim-checked body, when its message was found in the queue. */
  readonly storedBodyName?: string | undefined;
}

/** A job to create: its id, the message id to publish under and, for an idempotent request, the key to fingerprint it with. */
export interface NewJob {
  readonly kind: "new";
  readonly id: string;
  readonly msgId: string;
  readonly key?: ServerKey;
}

export type Identity = NewJob | ExistingJob;

/** One id an idempotency key may have been given, and the key that gave it. */
export interface Candidate {
  readonly id: string;
  readonly key: ServerKey;
}

/**
 * For a request with an Idempotency-Key: the job it already made (still within its ttl) under any
 * candidate id, or the message id to publish under (the first candidate's). An expired job of the
 * same key is forgotten first, so the new one starts clean; its message id differs from the old
 * one's, which JetStream may still remember.
 */
export async function findIdempotent(store: JobStore, route: RouteConfig, candidates: readonly Candidate[]): Promise<Identity> {
  const primary = candidates[0] as Candidate;
  let msgId = primary.id;
  for (const candidate of candidates) {
    const { id, key } = candidate;
    const found = await store.readRecord(id);
    if (found && !isExpired(found.record)) return { kind: "existing", id, status: found.record.status, fingerprint: found.record.fingerprint, key };
    if (found) {
      await forgetJob(store, id);
      if (candidate === primary) msgId = `${id}.${found.record.createdAt}`;
      continue;
    }
    const queued = await findQueuedRequest(store.context, [route.name], id);
    if (queued) return { kind: "existing", id, status: JobStatus.Queued, fingerprint: queued.fingerprint, key, storedBodyName: queued.storedBody?.name };
  }
  return { kind: "new", id: primary.id, msgId, key: primary.key };
}

/** Which job a request is (see the top of this file). */
export function identify(
  context: { prefix: string; store: JobStore; keys: ServerKeys },
  req: IncomingMessage,
  route: RouteConfig,
  idempotencyKey: string | undefined,
): Promise<Identity> | Identity {
  const { prefix, store, keys } = context;
  if (idempotencyKey === undefined) {
    const id = createJobId(keys);
    return { kind: "new", id, msgId: id };
  }
  const scope = [prefix, route.name, ...idempotencyScopeOf(req, route)];
  const ids = idempotentJobIdCandidates(keys, scope, idempotencyKey);
  return findIdempotent(
    store,
    route,
    ids.map((id, i) => ({ id, key: keys.all[i] as ServerKey })),
  );
}
