/**
 * The accept path: a request on an async route is persisted in JetStream and answered 202 only
 * once JetStream has acknowledged it. If that cannot happen the answer is 503: a 202 is a
 * promise, and nothing is promised that could be lost.
 *
 * A body that fits in one message is read into memory and published with the request (one
 * persisted write). A larger one is streamed into the Object Store as it arrives (the claim
 * check) and the message carries a reference. Either way nothing is queued until the whole body
 * is in, so a client that goes away mid-body leaves nothing behind.
 *
 * The job remembers its caller (route `owner`, as a keyed hash) and, with a key file, everything
 * about the request is sealed before it leaves the process (`toJobMessage`, `putRequestBody`).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { JetStreamApiError } from "@nats-io/jetstream";
import type { PubAck } from "@nats-io/jetstream";
import { RequestError, TimeoutError } from "@nats-io/transport-node";
import type { Config, RouteConfig } from "../config/index.js";
import { BadRequestError, BodyTooLargeError, IdempotencyKeyReusedError, NatsUnavailableError } from "../errors.js";
import type { Logger } from "../log.js";
import { toJobMessage } from "../jobs/envelope.js";
import type { JobMessage, JobRequest } from "../jobs/envelope.js";
import { publishJob } from "../jobs/queue.js";
import type { JobStore } from "../jobs/store.js";
import { createFingerprintHasher, fingerprintsMatch } from "../security/keyed-hash.js";
import type { FingerprintHasher } from "../security/keyed-hash.js";
import { bindOwner } from "../security/owner-identity.js";
import { sealedSize } from "../security/seal.js";
import type { ServerKeys } from "../security/server-keys.js";
import { DISABLED_TRACING, HttpAttributes, SlowlaneAttributes, endSpan, logFields, startServerSpan, toCarrier } from "../tracing/index.js";
import type { JobTraceCarrier, TracedSpan, Tracing } from "../tracing/index.js";
import { sendJson, sendProblem } from "../shared/problem.js";
import { hashBody, idempotencyKeyOf, readBody, toStoredHeaders } from "./accept-request.js";
import type { ReadBody } from "./accept-request.js";
import { findIdempotent, identify } from "./accept-identity.js";
import type { UnknownIds } from "./job-status.js";
import type { ExistingJob, Identity } from "./accept-identity.js";
import { announceAccepted } from "../jobs/transitions.js";
import type { AcceptCompletion, AcceptPlan } from "./accept-completion.js";
import { withoutCallbackHeader } from "./callback-header.js";

/** Room kept in a message for the envelope header (method, URL, headers as JSON). */
const ENVELOPE_ALLOWANCE_BYTES = 64 * 1024;
/**
 * Publishes of one accept when JetStream's confirmation times out, the first included. Each
 * again under the same `Nats-Msg-Id`, so a first try that was stored after all is kept once.
 */
export const PUBLISH_TRIES = 3;

export interface AcceptDeps {
  config: Config;
  log: Logger;
  /** The store while NATS is connected and set up, else `undefined` (→ 503). */
  store: () => JobStore | undefined;
  /** The server keys (ids, owner tags, fingerprints); `undefined` until known (→ 503). */
  keys: () => ServerKeys | undefined;
  /** The jobs endpoints' short memory of unknown ids: a job made here is forgotten from it at once. */
  unknownIds: UnknownIds;
  /** `Prefer` (wait-then-202) and `X-Callback-Url`. */
  completion: AcceptCompletion;
  /** Spans for accepted requests; default off. */
  tracing?: Tracing;
}

export type AcceptHandler = (req: IncomingMessage, res: ServerResponse, route: RouteConfig) => Promise<void>;

interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly route: RouteConfig;
  readonly store: JobStore;
  /** The request's logger: with `trace_id` and `span_id` when it is traced. */
  readonly log: Logger;
  /** The accept span's context, stored with the job: every attempt continues that trace. */
  readonly trace?: JobTraceCarrier;
}

/** A request that becomes a new job: its exchange and how its client wants to learn of completion. */
interface Submission extends Exchange {
  readonly plan: AcceptPlan;
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

/** What to do when reading a body failed: answer 413, 503, or drop a client that went away. */
function bodyFailed(log: Logger, exchange: Exchange, err: unknown): void {
  const { req, res, route } = exchange;
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
}

/** Reads the body; on failure answers (413, 503) or drops the connection, and returns `undefined`. */
async function receiveBody(log: Logger, exchange: Exchange, id: string, hasher: FingerprintHasher | undefined): Promise<ReadBody | undefined> {
  const { req, route, store } = exchange;
  const inlineBytes = store.context.maxPayloadBytes - ENVELOPE_ALLOWANCE_BYTES - (store.sealer ? sealedSize(0) : 0);
  try {
    return await readBody(req, store, id, { inlineBytes, maxBytes: route.maxBodyBytes }, hasher);
  } catch (err) {
    bodyFailed(log, exchange, err);
    return undefined;
  }
}

/**
 * Publishes the job's message and resolves with JetStream's acknowledgement. When the confirmation
 * times out, the same message is published again under the same message id (JetStream drops the
 * duplicate if the first got through), up to {@link PUBLISH_TRIES} times. `retried`: an earlier try
 * may have been stored, so a `duplicate` answer may be this job's own message.
 */
async function publishConfirmed(log: Logger, store: JobStore, job: JobRequest, message: JobMessage, msgId: string): Promise<{ ack: PubAck; retried: boolean }> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return { ack: await publishJob(store.context, job, message, msgId), retried: attempt > 1 };
    } catch (err) {
      if (!(err instanceof TimeoutError) || attempt >= PUBLISH_TRIES) throw err;
      log.warn({ err, job: job.id, route: job.route, attempt }, "JetStream did not confirm the publish in time; publishing again under the same message id");
    }
  }
}

/**
 * Whether a failed publish certainly stored nothing: JetStream answered with an error, or nobody
 * listened. After a timeout or a lost connection the message may exist, so its body must stay.
 */
function surelyNotStored(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return true;
  const cause = err instanceof Error ? err.cause : undefined;
  return cause instanceof RequestError && cause.isNoResponders();
}

/**
 * Publishes the job and resolves once JetStream has it; with the existing job when the message
 * id was a duplicate of an idempotent repeat that arrived at the same moment.
 */
async function persist(deps: AcceptDeps, exchange: Exchange, job: JobRequest, message: JobMessage, msgId: string): Promise<ExistingJob | undefined> {
  const { store, route } = exchange;
  const { ack, retried } = await publishConfirmed(deps.log, store, job, message, msgId);
  // A retried publish of a random id can only be a duplicate of its own first try.
  if (!ack.duplicate || (retried && job.fingerprint === undefined)) return undefined;
  // JetStream has seen this message id in the last two minutes: an idempotent repeat that
  // arrived at the same moment (then its job exists), or one whose job was deleted since.
  const keys = deps.keys() as ServerKeys;
  const now = await findIdempotent(store, route, [{ id: job.id, key: keys.primary }]);
  if (now.kind === "existing") {
    // Our uploaded body is orphaned when our message was surely not stored: a duplicate on the only
    // try. After retries an earlier try may be the message kept, so only a job known to name
    // another object lets it go (else it expires with the bucket's max_age).
    const ours = job.storedBody?.name;
    const other = now.storedBodyName !== undefined && now.storedBodyName !== ours;
    if (ours !== undefined && (!retried || other)) await store.deleteRequestBody(ours);
    return now;
  }
  await publishConfirmed(deps.log, store, job, message, `${job.id}.${job.createdAt}`);
  return undefined;
}

/**
 * Makes every replica forget that `id` was unknown (this one at once, the others by a core NATS
 * notice): an idempotent id may have been polled and found nowhere a moment ago.
 */
function announce(store: JobStore, unknownIds: UnknownIds, id: string): void {
  unknownIds.forget(id);
  store.context.nc.publish(store.context.names.acceptedSubject(id));
}

function toJob(exchange: Submission, keys: ServerKeys, id: string, body: ReadBody): JobRequest {
  const { req, route, plan, trace } = exchange;
  const stored = "stored" in body ? body.stored : undefined;
  const owner = bindOwner(keys, route.owner, req.rawHeaders);
  return {
    id,
    route: route.name,
    method: req.method ?? "GET",
    url: req.url ?? "/",
    // The callback URL is slowlane's to call, not the backend's to see.
    headers: withoutCallbackHeader(toStoredHeaders(req)),
    createdAt: Date.now(),
    ...(stored ? { storedBody: stored } : {}),
    ...(owner ? { owner } : {}),
    ...(plan.callbackUrl === undefined ? {} : { callbackUrl: plan.callbackUrl }),
    ...(trace ? { trace } : {}),
  };
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

  /** Answers a repeat of an idempotent request: the job it made, unless this one differs (422). */
  function answerRepeat(exchange: Exchange, existing: ExistingJob, fingerprint: string): void {
    const { res, route, log } = exchange;
    if (existing.fingerprint !== undefined && !fingerprintsMatch(existing.fingerprint, fingerprint)) {
      log.info({ job: existing.id, route: route.name }, "Idempotency-Key reused for another request; answered 422");
      sendProblem(res, new IdempotencyKeyReusedError());
      return;
    }
    log.info({ job: existing.id, route: route.name }, "idempotent retry: answered with the existing job");
    sendAccepted(res, jobsPath, route, existing.id, existing.status, { "idempotent-replayed": "true" });
  }

  async function repeat(exchange: Exchange, existing: ExistingJob): Promise<void> {
    const { req } = exchange;
    let fingerprint: string;
    try {
      fingerprint = await hashBody(req, createFingerprintHasher(existing.key, req.method ?? "GET", req.url ?? "/"), exchange.route.maxBodyBytes);
    } catch (err) {
      bodyFailed(exchange.log, exchange, err);
      return;
    }
    answerRepeat(exchange, existing, fingerprint);
  }

  async function submit(exchange: Submission, keys: ServerKeys, identity: Extract<Identity, { kind: "new" }>): Promise<void> {
    const { req, res, route, store, plan, log } = exchange;
    const hasher = identity.key && createFingerprintHasher(identity.key, req.method ?? "GET", req.url ?? "/");
    const body = await receiveBody(log, exchange, identity.id, hasher);
    if (!body) return;
    const job: JobRequest = { ...toJob(exchange, keys, identity.id, body), ...(hasher ? { fingerprint: hasher.digest() } : {}) };
    // Before the publish: a job that ends at once is still seen ending.
    const held = await deps.completion.hold(plan, job.id);
    let existing: ExistingJob | undefined;
    try {
      existing = await persist(deps, exchange, job, toJobMessage(job, "inline" in body ? body.inline : new Uint8Array(0), store.sealer), identity.msgId);
    } catch (err) {
      held?.stop();
      log.warn({ err, job: job.id, route: route.name }, "could not persist a request; answered 503");
      // A body is dropped only when JetStream surely stored no message naming it.
      if (job.storedBody && surelyNotStored(err)) await store.deleteRequestBody(job.storedBody.name).catch(() => undefined);
      unavailable(res, route, err);
      return;
    }
    if (existing) {
      held?.stop();
      return answerRepeat(exchange, existing, job.fingerprint ?? "");
    }
    // An idempotent id may have been unknown a moment ago (its earlier job expired or was deleted).
    if (job.fingerprint !== undefined) announce(store, deps.unknownIds, job.id);
    const bodyBytes = job.storedBody?.bytes ?? ("inline" in body ? body.inline.byteLength : 0);
    log.info({ job: job.id, route: route.name, method: job.method, bodyBytes, claimCheck: job.storedBody !== undefined }, "job accepted");
    await announceAccepted(store, job);
    const statusUrl = `${jobsPath}/${job.id}`;
    await deps.completion.answer(res, { id: job.id, statusUrl }, plan, held, (headers) => sendAccepted(res, jobsPath, route, job.id, "queued", headers));
  }

  return async function accept(req, res, route) {
    const traced = traceAccept(tracing, req, res, route);
    const log = traced ? deps.log.child(logFields(traced.span)) : deps.log;
    const store = deps.store();
    const keys = deps.keys();
    if (!store || !keys) {
      // Drain what the client sends so the 503 reaches it on a clean connection.
      req.resume();
      unavailable(res, route);
      return;
    }
    const exchange: Exchange = { req, res, route, store, log, ...(traced ? { trace: toCarrier(traced.context) } : {}) };
    let identity: Identity;
    let plan: AcceptPlan;
    try {
      plan = await deps.completion.plan(req, route);
      identity = await identify({ prefix: config.nats.stream, store, keys }, req, route, idempotencyKeyOf(req));
    } catch (err) {
      req.resume();
      if (err instanceof BadRequestError) sendProblem(res, err);
      else unavailable(res, route, err);
      return;
    }
    if (identity.kind === "existing") return repeat(exchange, identity);
    return submit({ ...exchange, plan }, keys, identity);
  };
}
