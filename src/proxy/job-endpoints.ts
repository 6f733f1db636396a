/**
 * The jobs endpoints: `GET <jobs.path>/<id>` (status), `GET <jobs.path>/<id>/result` (the
 * backend's response replayed) and `DELETE <jobs.path>/<id>` (cancel, or delete a finished job's
 * response). Ids are checked against the exact shape slowlane issues before they reach a subject
 * or a KV key; anything else is a 404.
 */
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config, RouteConfig } from "../config/index.js";
import type { Subscription } from "@nats-io/transport-node";
import {
  ErrorCodes,
  JobCanceledError,
  JobExpiredError,
  JobNotFoundError,
  MethodNotAllowedError,
  NatsUnavailableError,
  SlowlaneError,
} from "../errors.js";
import type { Logger } from "../log.js";
import { deleteDeadLetter, getDeadLetter } from "../jobs/dead-letters.js";
import { decodeEnvelope } from "../jobs/envelope.js";
import { isJobId } from "../jobs/job-id.js";
import { findQueuedMessage, findQueuedRequest } from "../jobs/queue.js";
import type { JetStreamContext } from "../nats/provision.js";
import { JobStatus, isExpired, isFinal, toStatusBody } from "../jobs/record.js";
import type { JobRecord } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import type { ResultCache } from "./result-cache.js";
import { sendJson, sendProblem } from "../shared/problem.js";

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
const JOB_METHODS = ["GET", "HEAD", "DELETE"];
/** Tries of a cancel that keeps losing its compare-and-set to a worker writing the record. */
const CANCEL_TRIES = 5;

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

  /**
   * Where a queued job may be: the configured routes, any configured since start, and any with a
   * consumer in the stream (a route removed from the config may still have queued jobs).
   */
  const knownRoutes = new Set<string>();
  function lookupRoutes(context?: JetStreamContext): string[] {
    for (const name of currentRoutes().names) knownRoutes.add(name);
    for (const name of context?.consumerRoutes ?? []) knownRoutes.add(name);
    return [...knownRoutes];
  }

  /** A route's settings, or the defaults for a route the config no longer has. */
  function settingsOf(route: string): RouteConfig | Config["defaults"] {
    return currentRoutes().byName.get(route) ?? deps.config().defaults;
  }

  // Cancel notices from any replica: a canceled or deleted job leaves this proxy's cache too.
  let cancelListener: { nc: JetStreamContext["nc"]; sub: Subscription } | undefined;
  function listenForCancels(context: JetStreamContext): void {
    if (cancelListener?.nc === context.nc) return;
    cancelListener?.sub.unsubscribe();
    const sub = context.nc.subscribe(context.names.cancelFilter, {
      callback: (err, msg) => {
        if (!err) cache.delete(msg.subject.slice(msg.subject.lastIndexOf(".") + 1));
      },
    });
    cancelListener = { nc: context.nc, sub };
  }

  /** The job's record from the jobs bucket or, queued and not yet started, from the stream. */
  async function readRecord(context: JetStreamContext, store: JobStore, id: string): Promise<JobRecord | undefined> {
    const record = await store.getRecord(id);
    if (record) return record;
    const queued = await findQueuedRequest(context.jsm, context.names, lookupRoutes(context), id);
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
    listenForCancels(backend.context);
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

  /**
   * The status answer of a final record, built once: final records never change, and the cache
   * hands out the same record object to every poll (profiled: building it was the poll's own cost).
   */
  // The body is kept as a string: Node then sends head and body in one write (a Buffer takes a writev of two).
  const finalAnswers = new WeakMap<JobRecord, { status: number; headers: string[]; body: string }>();
  function finalAnswer(record: JobRecord): { status: number; headers: string[]; body: string } {
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

  function sendStatus(res: ServerResponse, record: JobRecord): void {
    if (isFinal(record)) {
      const { status, headers, body } = finalAnswer(record);
      res.writeHead(status, headers).end(body);
      return;
    }
    sendJson(res, 202, toStatusBody(record, `${jobsPath}/${record.id}`), { "retry-after": settingsOf(record.route).retryAfterS });
  }

  async function sendResult(res: ServerResponse, record: JobRecord, cachedBody: Uint8Array | undefined): Promise<void> {
    if (record.status === JobStatus.Canceled) throw new JobCanceledError();
    if (record.status === JobStatus.Failed) {
      const failure = record.error ?? { code: ErrorCodes.UPSTREAM_UNREACHABLE, message: "the backend never answered" };
      const timedOut = failure.code === ErrorCodes.UPSTREAM_TIMEOUT;
      const extensions = { attempts: record.attempts, ...(failure.upstreamStatus ? { upstreamStatus: failure.upstreamStatus } : {}) };
      const err = new SlowlaneError(failure.code, timedOut ? 504 : 502, timedOut ? "Gateway Timeout" : "Bad Gateway", failure.message, {
        extensions,
      });
      sendProblem(res, err, { headers: { "x-slowlane-job-status": record.status } });
      return;
    }
    const response = record.response;
    if (!response) throw new Error(`completed job ${record.id} has no response`);
    let body: Uint8Array | ReadableStream<Uint8Array> | undefined = cachedBody;
    if (!body) {
      const backend = deps.backend();
      if (!backend) throw new NatsUnavailableError("the result store is unavailable, retry later");
      try {
        body = await backend.store.getBody(record.id, response);
      } catch (err) {
        throw new NatsUnavailableError("the result store did not answer, retry later", { cause: err });
      }
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

  /**
   * Cancels a job, or deletes a finished one. A job nobody started gets a `canceled` record (which
   * a worker that picks the message up obeys) and its message is deleted; a queued or running one
   * gets its record set to `canceled` by compare-and-set, and a notice makes the worker running it
   * abort the call; a finished one loses its record and stored response (then 404).
   */
  async function cancel(id: string): Promise<void> {
    const backend = deps.backend();
    if (!backend) throw new NatsUnavailableError("the job store is unavailable, retry later");
    const { context, store } = backend;
    const notify = () => context.nc.publish(context.names.cancelSubject(id));
    for (let i = 0; i < CANCEL_TRIES; i++) {
      const found = await store.readRecord(id);
      const now = Date.now();
      if (found && isFinal(found.record)) {
        // A failed job's request (and its claim-checked body) waits in the dead-letter stream for a retry.
        const letter = await getDeadLetter(context, found.record.route, id);
        const storedBody = letter ? decodeEnvelope(letter.headers)?.storedBody : undefined;
        await Promise.all([
          store.deleteResponse(id),
          storedBody ? store.deleteRequestBody(storedBody.name) : undefined,
          letter ? deleteDeadLetter(context, found.record.route, id) : undefined,
        ]);
        await store.deleteRecord(id);
        cache.delete(id);
        notify();
        log.info({ job: id, route: found.record.route }, "finished job deleted");
        return;
      }
      if (found) {
        const { record } = found;
        const canceled: JobRecord = { ...record, status: JobStatus.Canceled, updatedAt: now, expiresAt: now + settingsOf(record.route).ttlMs };
        if ((await store.updateRecord(canceled, found.revision)) === undefined) continue;
        notify();
        if (record.status === JobStatus.Queued) {
          // Waiting between attempts: its message is in the queue, with the name of a claim-checked body.
          // (A running job's worker deletes it once the call is aborted.)
          const queued = await findQueuedMessage(context.jsm, context.names, [record.route], id);
          const storedBody = queued?.request.storedBody;
          if (storedBody) await store.deleteRequestBody(storedBody.name);
        }
        log.info({ job: id, route: record.route, was: record.status }, "job canceled");
        return;
      }
      const queued = await findQueuedMessage(context.jsm, context.names, lookupRoutes(context), id);
      if (!queued) {
        // A worker may have started it between the two reads: it writes the record first.
        if (await store.getRecord(id)) continue;
        throw new JobNotFoundError();
      }
      const { request } = queued;
      const record: JobRecord = {
        id,
        route: request.route,
        status: JobStatus.Canceled,
        attempts: 0,
        createdAt: request.createdAt,
        updatedAt: now,
        expiresAt: now + settingsOf(request.route).ttlMs,
      };
      if ((await store.updateRecord(record, 0)) === undefined) continue;
      await context.jsm.streams.deleteMessage(context.names.stream, queued.seq, false).catch(() => false);
      if (request.storedBody) await store.deleteRequestBody(request.storedBody.name);
      notify();
      log.info({ job: id, route: request.route, was: "queued" }, "job canceled");
      return;
    }
    throw new NatsUnavailableError("the job kept changing while being canceled, retry");
  }

  return async function jobs(req, res, pathname) {
    try {
      const rest = pathname.startsWith(prefix) ? pathname.slice(prefix.length) : "";
      const slash = rest.indexOf("/");
      const id = slash === -1 ? rest : rest.slice(0, slash);
      const tail = slash === -1 ? "" : rest.slice(slash);
      if (!isJobId(id) || (tail !== "" && tail !== "/result")) throw new JobNotFoundError();
      const allowed = tail === "" ? JOB_METHODS : READ_METHODS;
      if (!allowed.includes(req.method ?? "")) throw new MethodNotAllowedError(allowed);
      if (req.method === "DELETE") {
        try {
          await cancel(id);
        } catch (err) {
          if (err instanceof SlowlaneError) throw err;
          throw new NatsUnavailableError("the job store did not answer, retry later", { cause: err });
        }
        res.writeHead(204).end();
        return;
      }
      const { record, body } = await lookup(id);
      if (tail === "/result" && isFinal(record)) await sendResult(res, record, body);
      else sendStatus(res, record);
    } catch (err) {
      const headers = err instanceof NatsUnavailableError ? { "retry-after": deps.config().defaults.retryAfterS } : undefined;
      sendProblem(res, err, { log, ...(headers ? { headers } : {}) });
    }
  };
}
