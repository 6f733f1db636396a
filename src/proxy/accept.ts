/**
 * The accept path: a request on an async route is persisted in JetStream and answered 202 only
 * once JetStream has acknowledged it. If that cannot happen the answer is 503: a 202 is a
 * promise, and nothing is promised that could be lost.
 *
 * A body that fits in one message is read into memory and published with the request (one
 * persisted write). A larger one is streamed into the Object Store as it arrives (the claim
 * check) and the message carries a reference. Either way nothing is queued until the whole body
 * is in, so a client that goes away mid-body leaves nothing behind.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config, RouteConfig } from "../config/index.js";
import { BadRequestError, BodyTooLargeError, NatsUnavailableError } from "../errors.js";
import type { Logger } from "../log.js";
import { forgetJob } from "../jobs/cancel.js";
import type { JobRequest } from "../jobs/envelope.js";
import { createJobId, toIdempotentJobId } from "../jobs/job-id.js";
import { findQueuedRequest, publishJob } from "../jobs/queue.js";
import { isExpired, JobStatus } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { DISABLED_TRACING, HttpAttributes, SlowlaneAttributes, endSpan, logFields, startServerSpan, toCarrier } from "../tracing/index.js";
import type { TracedSpan, Tracing } from "../tracing/index.js";
import { sendJson, sendProblem } from "../shared/problem.js";
import { callerOf, idempotencyKeyOf, readBody, toStoredHeaders } from "./accept-request.js";
import type { ReadBody } from "./accept-request.js";

/** Room kept in a message for the envelope header (method, URL, headers as JSON). */
const ENVELOPE_ALLOWANCE_BYTES = 64 * 1024;

export interface AcceptDeps {
  config: Config;
  log: Logger;
  /** The store while NATS is connected and set up, else `undefined` (→ 503). */
  store: () => JobStore | undefined;
  /** Spans for accepted requests; default off. */
  tracing?: Tracing;
}

export type AcceptHandler = (req: IncomingMessage, res: ServerResponse, route: RouteConfig) => Promise<void>;

/** Which job a request is: a fresh one (and the message id to publish under), or one that exists already. */
type Identity = { readonly id: string; readonly msgId: string; readonly existing?: undefined } | { readonly id: string; readonly existing: string };

/**
 * For a request with an Idempotency-Key: the job it already made (still within its ttl), or the
 * message id to publish under. An expired job of the same key is forgotten first, so the new one
 * starts clean; its message id differs from the old one's, which JetStream may still remember.
 */
async function findIdempotent(store: JobStore, route: RouteConfig, id: string): Promise<Identity> {
  const found = await store.readRecord(id);
  if (found && !isExpired(found.record)) return { id, existing: found.record.status };
  if (found) {
    await forgetJob(store, id);
    return { id, msgId: `${id}.${found.record.createdAt}` };
  }
  if (await findQueuedRequest(store.context, [route.name], id)) return { id, existing: JobStatus.Queued };
  return { id, msgId: id };
}

function identify(config: Config, store: JobStore, req: IncomingMessage, route: RouteConfig): Promise<Identity> | Identity {
  const key = idempotencyKeyOf(req);
  if (key === undefined) {
    const id = createJobId();
    return { id, msgId: id };
  }
  return findIdempotent(store, route, toIdempotentJobId([config.nats.stream, route.name, callerOf(req)], key));
}

function sendAccepted(res: ServerResponse, jobsPath: string, route: RouteConfig, id: string, status = "queued", extra: Record<string, string> = {}): void {
  const statusUrl = `${jobsPath}/${id}`;
  sendJson(res, 202, { id, status, statusUrl }, { location: statusUrl, "retry-after": route.retryAfterS, ...extra });
}

function unavailable(res: ServerResponse, route: RouteConfig, cause?: unknown): void {
  sendProblem(res, new NatsUnavailableError(undefined, cause === undefined ? {} : { cause }), {
    headers: { "retry-after": route.retryAfterS },
  });
}

/** Reads the body; on failure answers (413, 503) or drops the connection, and returns `undefined`. */
async function receiveBody(
  log: Logger,
  exchange: { req: IncomingMessage; res: ServerResponse },
  route: RouteConfig,
  store: JobStore,
  id: string,
): Promise<ReadBody | undefined> {
  const { req, res } = exchange;
  try {
    return await readBody(req, store, id, store.context.maxPayloadBytes - ENVELOPE_ALLOWANCE_BYTES, route.maxBodyBytes);
  } catch (err) {
    if (err instanceof BodyTooLargeError) {
      sendProblem(res, err, { headers: { connection: "close" } });
      req.resume();
    } else if (req.readableAborted || req.destroyed || res.destroyed) {
      // The client went away mid-body: nothing was queued, nobody to answer.
      log.debug({ err, route: route.name }, "client aborted the request body; nothing queued");
      res.destroy();
    } else {
      // The Object Store did not take the body.
      req.resume();
      log.warn({ err, route: route.name }, "could not store a large request body; answered 503");
      unavailable(res, route, err);
    }
    return undefined;
  }
}

/**
 * Publishes the job and resolves once JetStream has it; with the status of the existing job when
 * the message id was a duplicate of an idempotent repeat that arrived at the same moment.
 */
async function persist(store: JobStore, route: RouteConfig, job: JobRequest, body: ReadBody, msgId: string): Promise<string | undefined> {
  const inline = "inline" in body ? body.inline : new Uint8Array(0);
  const ack = await publishJob(store.context, job, inline, msgId);
  if (!ack.duplicate) return undefined;
  // JetStream has seen this message id in the last two minutes: an idempotent repeat that
  // arrived at the same moment (then its job exists), or one whose job was deleted since.
  const now = await findIdempotent(store, route, job.id);
  if (now.existing !== undefined) {
    if (job.storedBody) await store.deleteRequestBody(job.storedBody.name);
    return now.existing;
  }
  await publishJob(store.context, job, inline, `${job.id}.${job.createdAt}`);
  return undefined;
}

/**
 * The accept's SERVER span, continuing the client's `traceparent`, ended when the answer is sent:
 * its context goes with the job, its ids on the request's log lines. `undefined` with tracing off.
 */
function traceAccept(tracing: Tracing, req: IncomingMessage, res: ServerResponse, route: RouteConfig): TracedSpan | undefined {
  if (!tracing.enabled) return undefined;
  const attributes = { [HttpAttributes.route]: route.path, [SlowlaneAttributes.route]: route.name };
  const traced = startServerSpan(tracing, req, `${req.method ?? "GET"} ${route.path}`, attributes);
  res.once("close", () => {
    const status = res.statusCode;
    endSpan(traced.span, { outcome: status === 202 ? "accepted" : String(status), status });
  });
  return traced;
}

export function createAcceptHandler(deps: AcceptDeps): AcceptHandler {
  const { config } = deps;
  const tracing = deps.tracing ?? DISABLED_TRACING;
  const jobsPath = config.jobs.path;

  function sendReplayed(log: Logger, res: ServerResponse, route: RouteConfig, id: string, status: string): void {
    log.info({ job: id, route: route.name }, "idempotent retry: answered with the existing job");
    sendAccepted(res, jobsPath, route, id, status, { "idempotent-replayed": "true" });
  }

  return async function accept(req, res, route) {
    const traced = traceAccept(tracing, req, res, route);
    const log = traced ? deps.log.child(logFields(traced.span)) : deps.log;
    const store = deps.store();
    if (!store) {
      // Drain what the client sends so the 503 reaches it on a clean connection.
      req.resume();
      unavailable(res, route);
      return;
    }
    let identity: Identity;
    try {
      identity = await identify(config, store, req, route);
    } catch (err) {
      req.resume();
      if (err instanceof BadRequestError) sendProblem(res, err);
      else unavailable(res, route, err);
      return;
    }
    if (identity.existing !== undefined) {
      req.resume();
      sendReplayed(log, res, route, identity.id, identity.existing);
      return;
    }
    const body = await receiveBody(log, { req, res }, route, store, identity.id);
    if (!body) return;
    const stored = "stored" in body ? body.stored : undefined;
    const job: JobRequest = {
      id: identity.id,
      route: route.name,
      method: req.method ?? "GET",
      url: req.url ?? "/",
      headers: toStoredHeaders(req),
      createdAt: Date.now(),
      ...(stored ? { storedBody: stored } : {}),
      ...(traced ? { trace: toCarrier(traced.context) } : {}),
    };
    let replayed: string | undefined;
    try {
      replayed = await persist(store, route, job, body, identity.msgId);
    } catch (err) {
      log.warn({ err, route: route.name }, "could not persist a request; answered 503");
      if (stored) await store.deleteRequestBody(stored.name).catch(() => undefined);
      unavailable(res, route, err);
      return;
    }
    if (replayed !== undefined) return sendReplayed(log, res, route, job.id, replayed);
    const bodyBytes = stored?.bytes ?? ("inline" in body ? body.inline.byteLength : 0);
    log.info({ job: job.id, route: route.name, method: job.method, bodyBytes, claimCheck: stored !== undefined }, "job accepted");
    sendAccepted(res, jobsPath, route, job.id);
  };
}
