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
import { toEnvelopeHeaders } from "../jobs/envelope.js";
import type { JobRequest, StoredBodyRef } from "../jobs/envelope.js";
import { createJobId, toIdempotentJobId } from "../jobs/job-id.js";
import { findQueuedRequest } from "../jobs/queue.js";
import type { JetStreamContext } from "../nats/provision.js";
import { isExpired, JobStatus } from "../jobs/record.js";
import { requestObjectName } from "../jobs/store.js";
import { splitBody } from "../shared/split-body.js";
import type { JobStore } from "../jobs/store.js";
import { withoutHopByHop } from "../shared/hop-by-hop.js";
import { sendJson, sendProblem } from "../shared/problem.js";

/** How long the proxy waits for JetStream to confirm a publish before answering 503. */
const PUBLISH_TIMEOUT_MS = 5_000;
/** Room kept in a message for the envelope header (method, URL, headers as JSON). */
const ENVELOPE_ALLOWANCE_BYTES = 64 * 1024;
/** Content-Length is recomputed by the worker; the X-Forwarded-* ones are set by `toStoredHeaders`. */
const REPLACED = new Set(["content-length", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "x-forwarded-host"]);
/** An Idempotency-Key: 1 to 255 visible ASCII characters or spaces (UUIDs, ULIDs, hashes...). */
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

export interface AcceptDeps {
  config: Config;
  log: Logger;
  /** JetStream and the store while connected and set up, else `undefined` (→ 503). */
  backend: () => { context: JetStreamContext; store: JobStore } | undefined;
}

export type AcceptHandler = (req: IncomingMessage, res: ServerResponse, route: RouteConfig) => Promise<void>;

/** The request body: in memory when it fits in a message, else already in the Object Store. */
type ReadBody = { inline: Uint8Array } | { stored: StoredBodyRef };

/**
 * Reads the body, refusing more than `maxBytes`. Up to `inlineBytes` it is kept in memory; past
 * that, what was read and the rest go to the Object Store under a fresh name as they arrive.
 */
async function readBody(req: IncomingMessage, store: JobStore, id: string, inlineBytes: number, maxBytes: number): Promise<ReadBody> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > maxBytes) throw new BodyTooLargeError(maxBytes);
  const body = await splitBody(req as AsyncIterable<Buffer>, inlineBytes, maxBytes, () => new BodyTooLargeError(maxBytes));
  if ("whole" in body) return { inline: body.whole };
  const name = requestObjectName(id);
  return { stored: { name, bytes: await store.putRequestBody(name, body.stream) } };
}

/** The request headers as the backend would see them through a proxy: X-Forwarded-* added. */
function toStoredHeaders(req: IncomingMessage): string[] {
  const pairs = withoutHopByHop(req.rawHeaders, REPLACED);
  const priorFor = req.headers["x-forwarded-for"];
  const clientIp = req.socket.remoteAddress ?? "";
  const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
  const forwarded: [string, string][] = [
    ["x-forwarded-for", priorFor ? `${String(priorFor)}, ${clientIp}` : clientIp],
    ["x-forwarded-port", String(req.socket.localPort ?? "")],
    ["x-forwarded-proto", encrypted ? "https" : "http"],
    ["x-forwarded-host", req.headers.host ?? ""],
  ];
  for (const [name, value] of forwarded) if (value) pairs.push(name, value);
  return pairs;
}

/** The `Idempotency-Key` header, validated; `undefined` when absent. */
function idempotencyKeyOf(req: IncomingMessage): string | undefined {
  const key = req.headers["idempotency-key"];
  if (key === undefined) return undefined;
  // Node joins repeated headers with ", ": count the raw ones, so two keys are not taken for one.
  const count = req.rawHeaders.filter((name, i) => i % 2 === 0 && name.toLowerCase() === "idempotency-key").length;
  if (count !== 1 || typeof key !== "string" || !IDEMPOTENCY_KEY.test(key)) {
    throw new BadRequestError("Idempotency-Key must be one value of 1 to 255 printable ASCII characters");
  }
  return key;
}

/** Whose request it is, for scoping idempotency keys: the credentials the caller sent, if any. */
function callerOf(req: IncomingMessage): string {
  return req.headers.authorization ?? req.headers.cookie ?? "";
}

export function createAcceptHandler(deps: AcceptDeps): AcceptHandler {
  const { config, log } = deps;
  const jobsPath = config.jobs.path;

  function sendAccepted(res: ServerResponse, route: RouteConfig, id: string, status = "queued", extra: Record<string, string> = {}): void {
    const statusUrl = `${jobsPath}/${id}`;
    sendJson(res, 202, { id, status, statusUrl }, { location: statusUrl, "retry-after": route.retryAfterS, ...extra });
  }

  function sendReplayed(res: ServerResponse, route: RouteConfig, id: string, status: string): void {
    log.info({ job: id, route: route.name }, "idempotent retry: answered with the existing job");
    sendAccepted(res, route, id, status, { "idempotent-replayed": "true" });
  }

  function unavailable(res: ServerResponse, route: RouteConfig, cause?: unknown): void {
    sendProblem(res, new NatsUnavailableError(undefined, cause === undefined ? {} : { cause }), {
      headers: { "retry-after": route.retryAfterS },
    });
  }

  /**
   * For a request with an Idempotency-Key: the job it already made (still within its ttl), or the
   * message id to publish under. An expired job of the same key is deleted first, so the new one
   * starts clean; its message id differs from the old one's, which JetStream may still remember.
   */
  async function findIdempotent(
    context: JetStreamContext,
    store: JobStore,
    route: RouteConfig,
    id: string,
  ): Promise<{ existing: string } | { existing: undefined; msgID: string }> {
    const found = await store.readRecord(id);
    if (found && !isExpired(found.record)) return { existing: found.record.status };
    if (found) {
      await Promise.all([store.deleteResponse(id), store.deleteRecord(id)]);
      return { existing: undefined, msgID: `${id}.${found.record.createdAt}` };
    }
    if (await findQueuedRequest(context.jsm, context.names, [route.name], id)) return { existing: JobStatus.Queued };
    return { existing: undefined, msgID: id };
  }

  return async function accept(req, res, route) {
    const backend = deps.backend();
    if (!backend) {
      // Drain what the client sends so the 503 reaches it on a clean connection.
      req.resume();
      unavailable(res, route);
      return;
    }
    const { context, store } = backend;

    let id = createJobId();
    let msgID = id;
    let key: string | undefined;
    try {
      key = idempotencyKeyOf(req);
      if (key !== undefined) {
        id = toIdempotentJobId([config.nats.stream, route.name, callerOf(req)], key);
        const found = await findIdempotent(context, store, route, id);
        if (found.existing !== undefined) {
          req.resume();
          sendReplayed(res, route, id, found.existing);
          return;
        }
        msgID = found.msgID;
      }
    } catch (err) {
      req.resume();
      if (err instanceof BadRequestError) sendProblem(res, err);
      else unavailable(res, route, err);
      return;
    }

    let body: ReadBody;
    try {
      body = await readBody(req, store, id, context.maxPayloadBytes - ENVELOPE_ALLOWANCE_BYTES, route.maxBodyBytes);
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
      return;
    }

    const stored = "stored" in body ? body.stored : undefined;
    const inline = "inline" in body ? body.inline : new Uint8Array(0);
    const job: JobRequest = {
      id,
      route: route.name,
      method: req.method ?? "GET",
      url: req.url ?? "/",
      headers: toStoredHeaders(req),
      createdAt: Date.now(),
      ...(stored ? { storedBody: stored } : {}),
    };
    const publish = (messageId: string) =>
      context.js.publish(context.names.jobSubject(route.name, job.id), inline, {
        msgID: messageId,
        headers: toEnvelopeHeaders(job),
        timeout: PUBLISH_TIMEOUT_MS,
      });
    try {
      const ack = await publish(msgID);
      if (ack.duplicate) {
        // JetStream has seen this message id in the last two minutes: an idempotent repeat that
        // arrived at the same moment (then its job exists), or one whose job was deleted since.
        const now = await findIdempotent(context, store, route, id);
        if (now.existing !== undefined) {
          if (stored) await store.deleteRequestBody(stored.name);
          sendReplayed(res, route, id, now.existing);
          return;
        }
        await publish(`${id}.${job.createdAt}`);
      }
    } catch (err) {
      log.warn({ err, route: route.name }, "could not persist a request; answered 503");
      if (stored) await store.deleteRequestBody(stored.name).catch(() => undefined);
      unavailable(res, route, err);
      return;
    }
    const bodyBytes = stored?.bytes ?? inline.byteLength;
    log.info({ job: job.id, route: route.name, method: job.method, bodyBytes, claimCheck: stored !== undefined }, "job accepted");
    sendAccepted(res, route, job.id);
  };
}
