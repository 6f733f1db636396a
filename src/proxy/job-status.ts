/**
 * Finding a job for the status and result URLs, and the status answer itself. A final record is
 * cached (it never changes); anything else is read from the jobs bucket or, for a job no worker has
 * started, from the work queue.
 */
import type { ServerResponse } from "node:http";
import { routeTableOf } from "../config/index.js";
import type { Config } from "../config/index.js";
import { JobExpiredError, JobNotFoundError, NatsUnavailableError } from "../errors.js";
import { findQueuedRequest } from "../jobs/queue.js";
import { JobStatus, isExpired, isFinal, toStatusBody } from "../jobs/record.js";
import type { JobRecord } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { toQueuedView } from "../jobs/transitions.js";
import { sendJson } from "../shared/problem.js";
import type { CachedJob, ResultCache } from "./result-cache.js";

export interface JobLookupDeps {
  config: () => Config;
  cache: ResultCache;
  /** The store while NATS is connected and set up, else `undefined` (→ 503). */
  store: () => JobStore | undefined;
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
  /** The job's record (and cached body); throws not found, expired or unavailable. */
  find(id: string): Promise<CachedJob>;
  /** Routes a queued job may be under, for cancel. */
  knownRoutes(store: JobStore): string[];
}

export function createJobLookup(deps: JobLookupDeps): JobLookup {
  const knownRoutes = createKnownRoutes(deps);

  /** The job's record from the jobs bucket or, queued and not yet started, from the stream. */
  async function readJob(store: JobStore, id: string): Promise<JobRecord | undefined> {
    const found = await store.readRecord(id);
    if (found) return found.record;
    const queued = await findQueuedRequest(store.context, knownRoutes(store), id);
    if (queued) return toQueuedView(queued);
    // A worker may have started and acked it between the two reads: it writes the record first.
    return (await store.readRecord(id))?.record;
  }

  return {
    knownRoutes,
    async find(id) {
      const cached = deps.cache.get(id);
      if (cached) return cached;
      const store = deps.store();
      if (!store) throw new NatsUnavailableError("the job store is unavailable, retry later");
      let record: JobRecord | undefined;
      try {
        record = await readJob(store, id);
      } catch (err) {
        throw new NatsUnavailableError("the job store did not answer, retry later", { cause: err });
      }
      if (!record) throw new JobNotFoundError();
      if (isExpired(record)) throw new JobExpiredError();
      if (isFinal(record)) deps.cache.set(record);
      return { record };
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
