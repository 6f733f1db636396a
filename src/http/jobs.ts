/**
 * The jobs endpoints: `GET <jobs.path>/<id>` (status) and `GET <jobs.path>/<id>/result` (the
 * backend's response replayed). Ids are checked against the exact shape slowlane issues before
 * they reach a subject or a KV key; anything else is a 404.
 */
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config, RouteConfig } from "../config/index.js";
import {
  ErrorCodes,
  JobExpiredError,
  JobNotFoundError,
  MethodNotAllowedError,
  NatsUnavailableError,
  UpstreamTimeoutError,
  UpstreamUnreachableError,
} from "../errors.js";
import type { Logger } from "../log.js";
import { isJobId } from "../queue/job-id.js";
import { findQueuedRequest } from "../queue/lookup.js";
import type { JetStreamContext } from "../queue/provision.js";
import { JobStatus, isExpired, isFinal, toStatusBody } from "../store/job-record.js";
import type { JobRecord } from "../store/job-record.js";
import type { JobStore } from "../store/job-store.js";
import type { ResultCache } from "../store/result-cache.js";
import { sendJson, sendProblem } from "./problem.js";

export interface JobsDeps {
  /** The config in force (it changes on reload; `jobs.path` does not). */
  config: () => Config;
  log: Logger;
  cache: ResultCache;
  /** JetStream and the store while connected and set up, else `undefined` (→ 503). */
  backend: () => { context: JetStreamContext; store: JobStore } | undefined;
}

export type JobsHandler = (req: IncomingMessage, res: ServerResponse, pathname: string) => Promise<void>;

const READ_METHODS = ["GET", "HEAD"];

export function createJobsHandler(deps: JobsDeps): JobsHandler {
  const { log, cache } = deps;
  const jobsPath = deps.config().jobs.path;
  const prefix = `${jobsPath}/`;
  let routes = { config: undefined as Config | undefined, names: [] as string[], byName: new Map<string, RouteConfig>() };

  /** The routes of the config in force, indexed once per config. */
  function currentRoutes(): typeof routes {
    const config = deps.config();
    if (routes.config !== config) {
      routes = { config, names: config.routes.map((r) => r.name), byName: new Map(config.routes.map((r) => [r.name, r])) };
    }
    return routes;
  }

  function retryAfterS(record: JobRecord): number {
    return (currentRoutes().byName.get(record.route) ?? deps.config().defaults).retryAfterS;
  }

  /** The job's record from the jobs bucket or, queued and not yet started, from the stream. */
  async function readRecord(context: JetStreamContext, store: JobStore, id: string): Promise<JobRecord | undefined> {
    const record = await store.getRecord(id);
    if (record) return record;
    const queued = await findQueuedRequest(context.jsm, context.names, currentRoutes().names, id);
    if (queued) {
      const { route, createdAt } = queued;
      return { id, route, status: JobStatus.Queued, attempts: 0, createdAt, updatedAt: createdAt };
    }
    // A worker may have started and acked it between the two reads: it writes the record first.
    return store.getRecord(id);
  }

  async function lookup(id: string): Promise<{ record: JobRecord; body?: Uint8Array }> {
    const cached = cache.get(id);
    if (cached) return cached;
    const backend = deps.backend();
    if (!backend) throw new NatsUnavailableError("the job store is unavailable, retry later");
    let record: JobRecord | undefined;
    try {
      record = await readRecord(backend.context, backend.store, id);
    } catch (err) {
      throw new NatsUnavailableError("the job store did not answer, retry later", { cause: err });
    }
    if (!record) throw new JobNotFoundError();
    if (isExpired(record)) throw new JobExpiredError();
    if (isFinal(record)) cache.set(record);
    return { record };
  }

  function sendStatus(res: ServerResponse, record: JobRecord): void {
    const statusUrl = `${jobsPath}/${record.id}`;
    const body = toStatusBody(record, statusUrl);
    if (isFinal(record)) sendJson(res, 303, body, { location: `${statusUrl}/result` });
    else sendJson(res, 202, body, { "retry-after": retryAfterS(record) });
  }

  async function sendResult(res: ServerResponse, record: JobRecord, cachedBody: Uint8Array | undefined): Promise<void> {
    if (record.status === JobStatus.Failed) {
      const message = record.error?.message ?? "the backend never answered";
      const err =
        record.error?.code === ErrorCodes.UPSTREAM_TIMEOUT
          ? new UpstreamTimeoutError(message)
          : new UpstreamUnreachableError(message);
      sendProblem(res, err, { headers: { "x-slowlane-job-status": record.status } });
      return;
    }
    const response = record.response;
    if (!response) throw new Error(`completed job ${record.id} has no response`);
    let body: Uint8Array | ReadableStream<Uint8Array> | undefined = cachedBody;
    if (!body) {
      const backend = deps.backend();
      if (!backend) throw new NatsUnavailableError("the result store is unavailable, retry later");
      body = await backend.store.getBody(record.id, response);
      if (!body) throw new JobExpiredError();
      if (body instanceof Uint8Array) cache.set(record, body);
    }
    const headers = [...response.headers, "content-length", String(response.bodyBytes)];
    res.writeHead(response.status, headers);
    if (body instanceof Uint8Array) {
      res.end(body);
      return;
    }
    Readable.fromWeb(body as WebReadableStream<Uint8Array>)
      .on("error", (err) => {
        log.error({ err, job: record.id }, "streaming a stored body failed");
        res.destroy(err);
      })
      .pipe(res);
  }

  return async function jobs(req, res, pathname) {
    try {
      const rest = pathname.startsWith(prefix) ? pathname.slice(prefix.length) : "";
      const slash = rest.indexOf("/");
      const id = slash === -1 ? rest : rest.slice(0, slash);
      const tail = slash === -1 ? "" : rest.slice(slash);
      if (!isJobId(id) || (tail !== "" && tail !== "/result")) throw new JobNotFoundError();
      if (!READ_METHODS.includes(req.method ?? "")) throw new MethodNotAllowedError(READ_METHODS);
      const { record, body } = await lookup(id);
      if (tail === "/result" && isFinal(record)) await sendResult(res, record, body);
      else sendStatus(res, record);
    } catch (err) {
      const headers = err instanceof NatsUnavailableError ? { "retry-after": deps.config().defaults.retryAfterS } : undefined;
      sendProblem(res, err, { log, ...(headers ? { headers } : {}) });
    }
  };
}
