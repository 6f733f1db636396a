/**
 * Finding a job for the status and result URLs, and the status answer itself. A final record is
 * cached (it never changes); anything else is read from the jobs bucket or, for a job no worker has
 * started, from the work queue. An id found nowhere is remembered for a few seconds, so that polls
 * of unknown ids do not each cost NATS lookups.
 *
 * A job bound to its caller (route `owner`) is shown only to a request with the same identity;
 * to anyone else it is unknown: the same 404, never a 403 that would tell it exists.
 */
import type { ServerResponse } from "node:http";
import { LRUCache } from "lru-cache";
import { routeTableOf } from "../config/index.js";
import type { Config } from "../config/index.js";
import { JobExpiredError, JobNotFoundError, NatsUnavailableError } from "../errors.js";
import { findQueuedRequest } from "../jobs/queue.js";
import { JobStatus, isExpired, isFinal, toStatusBody } from "../jobs/record.js";
import type { JobRecord } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { toQueuedView } from "../jobs/transitions.js";
import { isOwner } from "../security/owner-identity.js";
import type { ServerKeys } from "../security/server-keys.js";
import { sendJson } from "../shared/problem.js";
import type { CachedJob, ResultCache } from "./result-cache.js";

/** Unknown ids remembered at most, and for how long: polling an unknown id costs NATS once per window. */
const UNKNOWN_IDS_MAX = 10_000;
const UNKNOWN_ID_TTL_MS = 3_000;

/**
 * Well-formed ids found nowhere, remembered for a few seconds. An idempotent request can bring an
 * id back (its earlier job expired or was deleted): the accept forgets it here, and other replicas
 * forget it on the "exists now" notice (`acceptedSubject`).
 */
export interface UnknownIds {
  has(id: string): boolean;
  add(id: string): void;
  forget(id: string): void;
}

export function createUnknownIds(options: { max?: number; ttlMs?: number } = {}): UnknownIds {
  const ids = new LRUCache<string, true>({ max: options.max ?? UNKNOWN_IDS_MAX, ttl: options.ttlMs ?? UNKNOWN_ID_TTL_MS });
  return {
    has: (id) => ids.has(id),
    add: (id) => void ids.set(id, true),
    forget: (id) => void ids.delete(id),
  };
}

export interface JobLookupDeps {
  config: () => Config;
  cache: ResultCache;
  /** The store while NATS is connected and set up, else `undefined` (→ 503). */
  store: () => JobStore | undefined;
  /** The server keys (owner tags); known whenever the store is. */
  keys: () => ServerKeys | undefined;
  unknownIds: UnknownIds;
}

/** Every route a queued job may be under: configured now, configured since start, or with a consumer. */
function createKnownRoutes(deps: JobLookupDeps): (store: JobStore) => string[] {
  const known = new Set<string>();
  return (store) => {
    for (const name of routeTableOf(deps.config()).names) known.add(name);
    for (const name of store.context.consumerRoutes) known.add(name);
    return [...known];
  };
}

export interface JobLookup {
  /**
   * The job's record (and cached body), if the request's headers (`rawHeaders`) show its owner;
   * throws not found (also for another caller's job), expired or unavailable.
   */
  find(id: string, rawHeaders: readonly string[]): Promise<CachedJob>;
  /** Throws not found unless the job exists (expired or not) and the request shows its owner: before a cancel. */
  checkOwner(id: string, rawHeaders: readonly string[]): Promise<void>;
  /** Routes a queued job may be under, for cancel. */
  knownRoutes(store: JobStore): string[];
}

export function createJobLookup(deps: JobLookupDeps): JobLookup {
  const knownRoutes = createKnownRoutes(deps);
  const unknown = deps.unknownIds;

  /** The job's record from the jobs bucket or, queued and not yet started, from the stream. */
  async function readJob(store: JobStore, id: string): Promise<JobRecord | undefined> {
    const found = await store.readRecord(id);
    if (found) return found.record;
    const queued = await findQueuedRequest(store.context, knownRoutes(store), id);
    if (queued) return toQueuedView(queued);
    // A worker may have started and acked it between the two reads: it writes the record first.
    return (await store.readRecord(id))?.record;
  }

  /** The job from the cache or the store, whatever its owner and expiry; throws not found or unavailable. */
  async function lookUp(id: string): Promise<CachedJob> {
    const cached = deps.cache.get(id);
    if (cached) return cached;
    if (unknown.has(id)) throw new JobNotFoundError();
    const store = deps.store();
    if (!store) throw new NatsUnavailableError("the job store is unavailable, retry later");
    let record: JobRecord | undefined;
    try {
      record = await readJob(store, id);
    } catch (err) {
      throw new NatsUnavailableError("the job store did not answer, retry later", { cause: err });
    }
    if (!record) {
      unknown.add(id);
      throw new JobNotFoundError();
    }
    if (isFinal(record) && !isExpired(record)) deps.cache.set(record);
    return { record };
  }

  function requireOwner(record: JobRecord, rawHeaders: readonly string[]): void {
    if (record.owner === undefined) return;
    const keys = deps.keys();
    if (!keys) throw new NatsUnavailableError("the job store is unavailable, retry later");
    // Another caller's job is unknown to this one: the same answer as an id that never existed.
    if (!isOwner(keys, record.owner, rawHeaders)) throw new JobNotFoundError();
  }

  return {
    knownRoutes,
    async find(id, rawHeaders) {
      const job = await lookUp(id);
      requireOwner(job.record, rawHeaders);
      if (isExpired(job.record)) throw new JobExpiredError();
      return job;
    },
    async checkOwner(id, rawHeaders) {
      requireOwner((await lookUp(id)).record, rawHeaders);
    },
  };
}

interface FinalAnswer {
  readonly status: number;
  readonly headers: string[];
  readonly body: string;
}

/** Sends a job's status: 202 while pending, 303 to the result when done, 200 when canceled. */
export function createStatusAnswer(jobsPath: string, config: () => Config): (res: ServerResponse, record: JobRecord) => void {
  // Final records never change and the cache hands out the same object to every poll, so their
  // answer is built once (profiled: building it was the poll's own cost). The body is a string:
  // Node then sends head and body in one write (a Buffer takes a writev of two).
  const finalAnswers = new WeakMap<JobRecord, FinalAnswer>();
  function finalAnswer(record: JobRecord): FinalAnswer {
    let answer = finalAnswers.get(record);
    if (!answer) {
      const statusUrl = `${jobsPath}/${record.id}`;
      const body = JSON.stringify(toStatusBody(record, statusUrl));
      const headers = ["content-type", "application/json", "content-length", String(Buffer.byteLength(body)), "cache-control", "no-store"];
      const canceled = record.status === JobStatus.Canceled;
      if (!canceled) headers.push("location", `${statusUrl}/result`);
      answer = { status: canceled ? 200 : 303, headers, body };
      finalAnswers.set(record, answer);
    }
    return answer;
  }

  return (res, record) => {
    if (isFinal(record)) {
      const { status, headers, body } = finalAnswer(record);
      res.writeHead(status, headers).end(body);
      return;
    }
    const retryAfter = routeTableOf(config()).settingsOf(record.route).retryAfterS;
    sendJson(res, 202, toStatusBody(record, `${jobsPath}/${record.id}`), { "retry-after": retryAfter });
  };
}
