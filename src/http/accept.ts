/**
 * The accept path: a request on an async route is read whole, persisted in JetStream with one
 * publish, and answered 202 only once JetStream has acknowledged it. If that cannot happen the
 * answer is 503: a 202 is a promise, and nothing is promised that could be lost.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config, RouteConfig } from "../config/index.js";
import { BodyTooLargeError, NatsUnavailableError } from "../errors.js";
import type { Logger } from "../log.js";
import { toEnvelopeHeaders } from "../queue/envelope.js";
import type { JobRequest } from "../queue/envelope.js";
import { createJobId } from "../queue/job-id.js";
import type { JetStreamContext } from "../queue/provision.js";
import { withoutHopByHop } from "./hop-by-hop.js";
import { sendJson, sendProblem } from "./problem.js";

/** How long the proxy waits for JetStream to confirm a publish before answering 503. */
const PUBLISH_TIMEOUT_MS = 5_000;
/** Room kept in a message for the envelope header (method, URL, headers as JSON). */
const ENVELOPE_ALLOWANCE_BYTES = 64 * 1024;
/** Content-Length is recomputed by the worker; the X-Forwarded-* ones are set by `toStoredHeaders`. */
const REPLACED = new Set(["content-length", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "x-forwarded-host"]);

export interface AcceptDeps {
  config: Config;
  log: Logger;
  /** The JetStream context while connected and set up, else `undefined` (→ 503). */
  context: () => JetStreamContext | undefined;
}

export type AcceptHandler = (req: IncomingMessage, res: ServerResponse, route: RouteConfig) => Promise<void>;

/** Reads a request body into one buffer, refusing more than `limitBytes`. */
async function readBody(req: IncomingMessage, limitBytes: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limitBytes) throw new BodyTooLargeError(limitBytes);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > limitBytes) throw new BodyTooLargeError(limitBytes);
    chunks.push(chunk);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
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

export function createAcceptHandler(deps: AcceptDeps): AcceptHandler {
  const { config, log } = deps;
  const jobsPath = config.jobs.path;

  return async function accept(req, res, route) {
    const context = deps.context();
    if (!context) {
      // Drain what the client sends so the 503 reaches it on a clean connection.
      req.resume();
      sendProblem(res, new NatsUnavailableError(), { headers: { "retry-after": route.retryAfterS } });
      return;
    }
    const limitBytes = context.maxPayloadBytes - ENVELOPE_ALLOWANCE_BYTES;
    let body: Buffer;
    try {
      body = await readBody(req, limitBytes);
    } catch (err) {
      if (err instanceof BodyTooLargeError) {
        sendProblem(res, err, { headers: { connection: "close" } });
        req.resume();
      } else {
        // The client went away mid-body: nothing was queued, nobody to answer.
        log.debug({ err, route: route.name }, "client aborted the request body; nothing queued");
        res.destroy();
      }
      return;
    }

    const job: JobRequest = {
      id: createJobId(),
      route: route.name,
      method: req.method ?? "GET",
      url: req.url ?? "/",
      headers: toStoredHeaders(req),
      createdAt: Date.now(),
    };
    try {
      await context.js.publish(context.names.jobSubject(route.name, job.id), body, {
        msgID: job.id,
        headers: toEnvelopeHeaders(job),
        timeout: PUBLISH_TIMEOUT_MS,
      });
    } catch (err) {
      log.warn({ err, route: route.name }, "could not persist a request; answered 503");
      sendProblem(res, new NatsUnavailableError(undefined, { cause: err }), {
        headers: { "retry-after": route.retryAfterS },
      });
      return;
    }
    const statusUrl = `${jobsPath}/${job.id}`;
    log.info({ job: job.id, route: route.name, method: job.method, bodyBytes: body.byteLength }, "job accepted");
    sendJson(res, 202, { id: job.id, status: "queued", statusUrl }, { location: statusUrl, "retry-after": route.retryAfterS });
  };
}
