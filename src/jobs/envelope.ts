/**
 * The request envelope: how an accepted HTTP request travels through JetStream.
 *
 * The body bytes are the message payload as they are (no base64, no copy into a bigger buffer);
 * everything else rides in one NATS header as JSON. JSON escapes CR and LF, which NATS header
 * values must not contain, and HTTP header values cannot contain them either.
 *
 * With a server key file (encryption at rest), the URL and headers ride sealed in the envelope's
 * `sealed` member and the payload is sealed too (`bodySealed`), each with the job id as associated
 * data. What stays readable is what every proxy needs to find and check a queued job without
 * opening it: id, route, method, time, owner tag, fingerprint and the claim check's name.
 */
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MsgHdrs } from "@nats-io/transport-node";
import { messageOf } from "../errors.js";
import { isJobOwner } from "../security/owner-identity.js";
import type { JobOwner } from "../security/owner-identity.js";
import type { Sealer } from "../security/seal.js";
import { isJobTraceCarrier } from "../tracing/index.js";
import type { JobTraceCarrier } from "../tracing/index.js";

export const ENVELOPE_HEADER = "Slowlane-Request";
const ENVELOPE_VERSION = 1;

export interface StoredBodyRef {
  readonly name: string;
  /** The body's size (plaintext, what the backend gets as Content-Length). */
  readonly bytes: number;
  /** The object is a sealed stream (`sealStream`, the job id as associated data). */
  readonly sealed?: true;
}

function isStoredBodyRef(value: unknown): value is StoredBodyRef {
  if (typeof value !== "object" || value === null) return false;
  const ref = value as Record<string, unknown>;
  return typeof ref.name === "string" && typeof ref.bytes === "number" && (ref.sealed === undefined || ref.sealed === true);
}

/** What a worker needs to replay a request to the backend. */
export interface JobRequest {
  readonly id: string;
  readonly route: string;
  readonly method: string;
  /** Path and query, exactly as the client sent them. */
  readonly url: string;
  /** Header name/value pairs, flat (`[name, value, name, value, …]`), hop-by-hop ones removed. */
  readonly headers: readonly string[];
  /** Epoch milliseconds when the proxy accepted the request. */
  readonly createdAt: number;
  /**
   * Set when the body was too large for the message: it is in the Object Store under `name` (the
   * claim check) and has `bytes` bytes; the message payload is then empty.
   */
  readonly storedBody?: StoredBodyRef;
  /** Who submitted it (route `owner`); absent: the job is not bound to a caller. */
  readonly owner?: JobOwner;
  /** Keyed hash of method, URL and body, kept for requests sent with an `Idempotency-Key`. */
  readonly fingerprint?: string;
  /** Read back from a message: its payload is sealed (open it with the store). */
  readonly bodySealed?: true;
  /**
   * Read back from a message whose URL and headers are sealed but could not be opened (no key
   * file, or its key was removed): why. `url` and `headers` are then empty, and the job must fail.
   */
  readonly unreadable?: string;
  /** The client's `X-Callback-Url`, checked against the route's `callbacks.allow` at accept. */
  readonly callbackUrl?: string;
  /** The accept span's context (W3C), when the proxy traced the request: every attempt is its child. */
  readonly trace?: JobTraceCarrier;
}

/** An accepted request as a message: the envelope header and the payload. */
export interface JobMessage {
  readonly headers: MsgHdrs;
  readonly data: Uint8Array;
}

/** The part of an envelope that is sealed when a key file is configured. */
interface SealedPart {
  url: string;
  headers: readonly string[];
}

function toEnvelope(request: JobRequest, sealer: Sealer | undefined): Record<string, unknown> {
  const { id, route, method, createdAt, storedBody, owner, fingerprint, callbackUrl, trace } = request;
  const part: SealedPart = { url: request.url, headers: request.headers };
  return {
    v: ENVELOPE_VERSION,
    id,
    route,
    method,
    createdAt,
    ...(sealer ? { sealed: sealer.seal(Buffer.from(JSON.stringify(part)), id).toString("base64"), bodySealed: true } : part),
    ...(storedBody === undefined ? {} : { storedBody }),
    ...(owner === undefined ? {} : { owner }),
    ...(fingerprint === undefined ? {} : { fingerprint }),
    ...(callbackUrl === undefined ? {} : { callbackUrl }),
    ...(trace === undefined ? {} : { trace }),
  };
}

function headersOf(envelope: Record<string, unknown>): MsgHdrs {
  const h = natsHeaders();
  h.set(ENVELOPE_HEADER, JSON.stringify(envelope));
  return h;
}

/** The envelope header of a request, in plaintext (no key file). */
export function toEnvelopeHeaders(request: JobRequest): MsgHdrs {
  return headersOf(toEnvelope(request, undefined));
}

/** The message of an accepted request; with a sealer, URL, headers and `body` are sealed for the job's id. */
export function toJobMessage(request: JobRequest, body: Uint8Array, sealer: Sealer | undefined): JobMessage {
  return { headers: headersOf(toEnvelope(request, sealer)), data: sealer ? sealer.seal(body, request.id) : body };
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === "string");
}

/** A stored trace carrier, copied field by field; one that is not a carrier is dropped: worth a trace, never a failed job. */
function decodeTrace(value: unknown): { trace?: JobTraceCarrier } {
  if (!isJobTraceCarrier(value)) return {};
  const { traceparent, tracestate } = value;
  return { trace: tracestate === undefined ? { traceparent } : { traceparent, tracestate } };
}

function isSealedPart(value: unknown): value is SealedPart {
  if (typeof value !== "object" || value === null) return false;
  const part = value as Record<string, unknown>;
  return typeof part.url === "string" && isStringArray(part.headers) && part.headers.length % 2 === 0;
}

/** URL and headers of an envelope: plain, opened, or (sealed and not opened) empty with the reason. */
function readPart(e: Record<string, unknown>, id: string, sealer: Sealer | undefined): (SealedPart & { unreadable?: string }) | undefined {
  if (typeof e.sealed !== "string") return isSealedPart(e) ? { url: e.url, headers: e.headers } : undefined;
  if (!sealer) return { url: "", headers: [], unreadable: "the request is encrypted and no key file is configured" };
  let part: unknown;
  try {
    part = JSON.parse(sealer.open(Buffer.from(e.sealed, "base64"), id).toString("utf8"));
  } catch (err) {
    return { url: "", headers: [], unreadable: messageOf(err) };
  }
  return isSealedPart(part) ? { url: part.url, headers: part.headers } : undefined;
}

/**
 * Reads an envelope back; `undefined` when the message is not one slowlane wrote (a poison message).
 * Without `sealer`, a sealed envelope gives its readable part only (`unreadable` set): enough to
 * find, check or cancel a job, not to run it.
 */
export function decodeEnvelope(hdrs: MsgHdrs | undefined, sealer?: Sealer): JobRequest | undefined {
  const raw = hdrs?.get(ENVELOPE_HEADER);
  if (!raw) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const e = parsed as Record<string, unknown>;
  if (
    e.v !== ENVELOPE_VERSION ||
    typeof e.id !== "string" ||
    typeof e.route !== "string" ||
    typeof e.method !== "string" ||
    typeof e.createdAt !== "number" ||
    (e.storedBody !== undefined && !isStoredBodyRef(e.storedBody)) ||
    (e.owner !== undefined && !isJobOwner(e.owner)) ||
    (e.fingerprint !== undefined && typeof e.fingerprint !== "string") ||
    (e.callbackUrl !== undefined && typeof e.callbackUrl !== "string")
  ) {
    return undefined;
  }
  const part = readPart(e, e.id, sealer);
  if (!part) return undefined;
  return {
    id: e.id,
    route: e.route,
    method: e.method,
    url: part.url,
    headers: part.headers,
    createdAt: e.createdAt,
    ...(isStoredBodyRef(e.storedBody) ? { storedBody: { name: e.storedBody.name, bytes: e.storedBody.bytes, ...(e.storedBody.sealed ? { sealed: true as const } : {}) } } : {}),
    ...(isJobOwner(e.owner) ? { owner: { by: [...e.owner.by], tag: e.owner.tag } } : {}),
    ...(typeof e.fingerprint === "string" ? { fingerprint: e.fingerprint } : {}),
    ...(typeof e.callbackUrl === "string" ? { callbackUrl: e.callbackUrl } : {}),
    ...(e.bodySealed === true ? { bodySealed: true as const } : {}),
    ...(part.unreadable === undefined ? {} : { unreadable: part.unreadable }),
    ...decodeTrace(e.trace),
  };
}
