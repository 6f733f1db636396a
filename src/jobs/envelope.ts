/**
 * The request envelope: how an accepted HTTP request travels through JetStream.
 *
 * The body bytes are the message payload as they are (no base64, no copy into a bigger buffer);
 * everything else rides in one NATS header as JSON. JSON escapes CR and LF, which NATS header
 * values must not contain, and HTTP header values cannot contain them either.
 */
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MsgHdrs } from "@nats-io/transport-node";
import { isJobTraceCarrier } from "../tracing/index.js";
import type { JobTraceCarrier } from "../tracing/index.js";

export const ENVELOPE_HEADER = "Slowlane-Request";
const ENVELOPE_VERSION = 1;

export interface StoredBodyRef {
  readonly name: string;
  readonly bytes: number;
}

function isStoredBodyRef(value: unknown): value is StoredBodyRef {
  if (typeof value !== "object" || value === null) return false;
  const ref = value as Record<string, unknown>;
  return typeof ref.name === "string" && typeof ref.bytes === "number";
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
  /** The accept span's context (W3C), when the proxy traced the request: every attempt is its child. */
  readonly trace?: JobTraceCarrier;
}

export function toEnvelopeHeaders(request: JobRequest): MsgHdrs {
  const h = natsHeaders();
  h.set(
    ENVELOPE_HEADER,
    JSON.stringify({
      v: ENVELOPE_VERSION,
      id: request.id,
      route: request.route,
      method: request.method,
      url: request.url,
      headers: request.headers,
      createdAt: request.createdAt,
      ...(request.storedBody === undefined ? {} : { storedBody: request.storedBody }),
      ...(request.trace === undefined ? {} : { trace: request.trace }),
    }),
  );
  return h;
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

/** Reads an envelope back; `undefined` when the message is not one slowlane wrote (a poison message). */
export function decodeEnvelope(hdrs: MsgHdrs | undefined): JobRequest | undefined {
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
    typeof e.url !== "string" ||
    typeof e.createdAt !== "number" ||
    !isStringArray(e.headers) ||
    e.headers.length % 2 !== 0 ||
    (e.storedBody !== undefined && !isStoredBodyRef(e.storedBody))
  ) {
    return undefined;
  }
  const request = { id: e.id, route: e.route, method: e.method, url: e.url, headers: e.headers, createdAt: e.createdAt };
  const decoded = isStoredBodyRef(e.storedBody) ? { ...request, storedBody: { name: e.storedBody.name, bytes: e.storedBody.bytes } } : request;
  return e.trace === undefined ? decoded : { ...decoded, ...decodeTrace(e.trace) };
}
