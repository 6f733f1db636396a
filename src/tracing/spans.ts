/**
 * The spans slowlane makes, one function per hot spot. One trace crosses the queue:
 *
 *   client ─▶ [SERVER accept] ─ carrier stored with the job ─▶ [CONSUMER attempt 1] ─▶ [CLIENT backend call]
 *                      └────────────────────────────────────▶ [CONSUMER attempt 2] ─▶ [CLIENT backend call]
 *                                             (links attempt 1)               └──▶ [CLIENT callback]
 *
 * Contexts are passed explicitly (no async-hooks context manager). With tracing off every
 * function returns at its first line: no header is parsed, no object made, nothing rewritten.
 */
import type { IncomingMessage } from "node:http";
import { INVALID_SPAN_CONTEXT, ROOT_CONTEXT, SpanKind, SpanStatusCode, isSpanContextValid, propagation, trace } from "@opentelemetry/api";
import type { Attributes, Context, Link, Span, SpanContext } from "@opentelemetry/api";
import { HttpAttributes, SlowlaneAttributes } from "./attributes.js";
import type { Tracing } from "./setup.js";

/** A span and the context to parent children on (and to store, inject, or log from). */
export interface TracedSpan {
  readonly span: Span;
  readonly context: Context;
}

/** What a span ended as. */
export interface SpanEnd {
  /** slowlane's word for it, as in logs and metrics: `accepted`, `completed`, `timeout`, `503`… */
  readonly outcome: string;
  /** The HTTP status answered (server spans) or received (client spans). */
  readonly status?: number;
  /** Set when the operation failed; its `code` (or class name) becomes `error.type`. */
  readonly error?: unknown;
}

/** `trace_id`/`span_id` for pino, as OpenTelemetry's log conventions name them; `{}` without a trace. */
export type TraceLogFields = { readonly trace_id: string; readonly span_id: string } | Readonly<Record<string, never>>;

/** Returned whenever tracing is off: the API's non-recording span over an invalid context. */
const OFF: TracedSpan = Object.freeze({ span: trace.wrapSpanContext(INVALID_SPAN_CONTEXT), context: ROOT_CONTEXT });
const NO_LOG_FIELDS: TraceLogFields = Object.freeze({});

/** Span kinds by span, for `endSpan`'s status rule (the API's Span does not expose its kind). */
const kinds = new WeakMap<Span, SpanKind>();

/** Methods the conventions name; others are reported as `_OTHER` with the original beside it. */
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]);

function methodAttributes(method: string): Attributes {
  return KNOWN_METHODS.has(method)
    ? { [HttpAttributes.requestMethod]: method }
    : { [HttpAttributes.requestMethod]: "_OTHER", [HttpAttributes.requestMethodOriginal]: method };
}

function start(tracing: Tracing, name: string, kind: SpanKind, parent: Context, attributes: Attributes, links?: Link[]): TracedSpan {
  const span = tracing.tracer.startSpan(name, { kind, attributes, ...(links ? { links } : {}) }, parent);
  kinds.set(span, kind);
  return { span, context: trace.setSpan(parent, span) };
}

/** A path or URL cut before its query or fragment: query strings carry tokens too often to export. */
function withoutQuery(url: string): string {
  const cut = url.search(/[?#]/);
  return cut === -1 ? url : url.slice(0, cut);
}

/**
 * The server span of a request the proxy received, continuing the client's `traceparent` and
 * `tracestate` when valid (W3C propagator). `name` per the HTTP conventions: `POST /reports/*`
 * with a route, the method alone without one. Attributes: method, `url.path` (no query), scheme,
 * protocol version, plus `attrs`.
 */
export function startServerSpan(tracing: Tracing, req: IncomingMessage, name: string, attrs: Attributes = {}): TracedSpan {
  if (!tracing.enabled) return OFF;
  const parent = propagation.extract(ROOT_CONTEXT, req.headers);
  const encrypted = (req.socket as { encrypted?: boolean } | null)?.encrypted === true;
  return start(tracing, name, SpanKind.SERVER, parent, {
    ...methodAttributes(req.method ?? "GET"),
    [HttpAttributes.urlPath]: withoutQuery(req.url ?? "/"),
    [HttpAttributes.urlScheme]: encrypted ? "https" : "http",
    [HttpAttributes.networkProtocolVersion]: req.httpVersion,
    ...attrs,
  });
}

/** What a job keeps of its trace: the accept span's context in W3C form, a few dozen bytes. */
export interface JobTraceCarrier {
  readonly traceparent: string;
  readonly tracestate?: string;
}

/** Guard for a carrier read back from an envelope or record (untrusted JSON). */
export function isJobTraceCarrier(value: unknown): value is JobTraceCarrier {
  if (typeof value !== "object" || value === null) return false;
  const c = value as Record<string, unknown>;
  return typeof c.traceparent === "string" && (c.tracestate === undefined || typeof c.tracestate === "string");
}

/** The carrier of a context's span, to store with a job; `undefined` when there is no span (tracing off). */
export function toCarrier(context: Context): JobTraceCarrier | undefined {
  if (trace.getSpanContext(context) === undefined) return undefined;
  const fields: Record<string, string> = {};
  propagation.inject(context, fields);
  const { traceparent, tracestate } = fields;
  if (traceparent === undefined) return undefined;
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

/** A context whose (remote) span is the carrier's, to parent spans on; the root context when none. */
export function fromCarrier(carrier: JobTraceCarrier | undefined): Context {
  return carrier === undefined ? ROOT_CONTEXT : propagation.extract(ROOT_CONTEXT, carrier);
}

/**
 * The client's own trace headers from a stored request's flat pairs: the parent for attempts of a
 * job that has no carrier (accepted by a proxy with tracing off). Two `traceparent`s make neither
 * valid (W3C); several `tracestate`s combine.
 */
export function carrierFromHeaders(pairs: readonly string[]): JobTraceCarrier | undefined {
  let traceparent: string | undefined;
  let parents = 0;
  const states: string[] = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = (pairs[i] as string).toLowerCase();
    if (name === "traceparent") {
      traceparent = pairs[i + 1] as string;
      parents += 1;
    } else if (name === "tracestate") states.push(pairs[i + 1] as string);
  }
  if (traceparent === undefined || parents !== 1) return undefined;
  return states.length > 0 ? { traceparent, tracestate: states.join(",") } : { traceparent };
}

/** What the worker knows about the attempt it starts. */
export interface AttemptInfo {
  readonly route: string;
  readonly jobId: string;
  /** 1-based, as the job record counts attempts. */
  readonly attempt: number;
  /** From enqueue (or from the previous attempt's end) to this start, in ms. */
  readonly queueWaitMs: number;
  /** The previous attempt's span, as `toCarrier` gave it: linked, so retries read as a chain. */
  readonly previousAttempt?: JobTraceCarrier;
}

/**
 * The span of one attempt at a job (CONSUMER): a child of the accept span in `carrier`, linked to
 * the previous attempt's span. Its children are the backend call and any callback.
 */
export function startAttemptSpan(tracing: Tracing, carrier: JobTraceCarrier | undefined, info: AttemptInfo): TracedSpan {
  if (!tracing.enabled) return OFF;
  const previous = info.previousAttempt === undefined ? undefined : trace.getSpanContext(fromCarrier(info.previousAttempt));
  const links = previous !== undefined && isSpanContextValid(previous) ? [{ context: previous }] : [];
  return start(
    tracing,
    `attempt ${info.route}`,
    SpanKind.CONSUMER,
    fromCarrier(carrier),
    {
      [SlowlaneAttributes.route]: info.route,
      [SlowlaneAttributes.jobId]: info.jobId,
      [SlowlaneAttributes.attempt]: info.attempt,
      [SlowlaneAttributes.queueWaitMs]: info.queueWaitMs,
    },
    links,
  );
}

/** The outgoing call a client span describes. */
export interface ClientCall {
  readonly method: string;
  /** The target URL; its query, fragment and any credentials are dropped before it becomes `url.full`. */
  readonly url: string;
  readonly route?: string;
  readonly jobId?: string;
  /** Span name; default the method, as the HTTP conventions name client spans. */
  readonly name?: string;
}

/** `url.full`, `server.address` and `server.port` with nothing secret left in them. */
function urlAttributes(url: string): Attributes {
  if (!URL.canParse(url)) return { [HttpAttributes.urlFull]: withoutQuery(url) };
  const u = new URL(url);
  const port = u.port === "" ? (u.protocol === "https:" ? 443 : 80) : Number(u.port);
  return {
    [HttpAttributes.urlFull]: `${u.protocol}//${u.host}${u.pathname}`,
    [HttpAttributes.serverAddress]: u.hostname,
    [HttpAttributes.serverPort]: port,
  };
}

/** A CLIENT span for a call to the backend (passthrough or attempt) or a callback, under `parent`. */
export function startClientSpan(tracing: Tracing, parent: Context, call: ClientCall): TracedSpan {
  if (!tracing.enabled) return OFF;
  const method = methodAttributes(call.method);
  const attributes: Attributes = { ...method, ...urlAttributes(call.url) };
  if (call.route !== undefined) attributes[SlowlaneAttributes.route] = call.route;
  if (call.jobId !== undefined) attributes[SlowlaneAttributes.jobId] = call.jobId;
  const name = call.name ?? (method[HttpAttributes.requestMethod] === "_OTHER" ? "HTTP" : call.method);
  return start(tracing, name, SpanKind.CLIENT, parent, attributes);
}

/** True for the two names, without lower-casing every header name on the way. */
function isTraceHeader(name: string): boolean {
  return (name.length === 11 || name.length === 10) && /^trace(parent|state)$/i.test(name);
}

/**
 * Sets `traceparent` (and `tracestate`) in flat `[name, value, …]` pairs to `context`'s span,
 * replacing any the client sent, in place. With tracing off (no span in `context`) the pairs are
 * left exactly as they are, the client's trace headers included.
 */
export function injectTraceHeaders(context: Context, pairs: string[]): void {
  const carrier = toCarrier(context);
  if (carrier === undefined) return;
  for (let i = pairs.length - 2; i >= 0; i -= 2) if (isTraceHeader(pairs[i] as string)) pairs.splice(i, 2);
  pairs.push("traceparent", carrier.traceparent);
  // A tracestate belongs to the trace in traceparent: the client's is dropped if ours has none.
  if (carrier.tracestate !== undefined) pairs.push("tracestate", carrier.tracestate);
}

/**
 * {@link injectTraceHeaders} for a Node header object (`req.headers`, lower-case names), which is
 * what http-proxy-3 forwards on passthrough.
 */
export function injectTraceHeaderRecord(context: Context, headers: Record<string, string | string[] | undefined>): void {
  const carrier = toCarrier(context);
  if (carrier === undefined) return;
  headers.traceparent = carrier.traceparent;
  if (carrier.tracestate !== undefined) headers.tracestate = carrier.tracestate;
  else delete headers.tracestate;
}

/** `error.type`: a stable code when the error has one (slowlane's errors do), else its class name. */
function errorTypeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code !== "") return code;
  return error instanceof Error ? error.name : "_OTHER";
}

/**
 * Whether an HTTP status fails the span: a 4xx is the caller's mistake, so it fails a client span
 * but not the server span that answered it. An attempt (CONSUMER) fails only by its `error`: a
 * backend's 404 is a result to store, not a failed attempt.
 */
function isFailedStatus(kind: SpanKind | undefined, status: number): boolean {
  if (kind === SpanKind.CONSUMER) return false;
  return status >= 500 || (status >= 400 && kind === SpanKind.CLIENT);
}

/**
 * Ends a span with its outcome. Status per the HTTP conventions: ERROR for a thrown `error`, for
 * 5xx on server spans and for 4xx/5xx on client spans; otherwise left unset (never OK), with
 * `error.type` naming the failure. No-op on a span that is not recording.
 */
export function endSpan(span: Span, end: SpanEnd): void {
  if (!span.isRecording()) {
    span.end();
    return;
  }
  span.setAttribute(SlowlaneAttributes.outcome, end.outcome);
  if (end.status !== undefined) span.setAttribute(HttpAttributes.responseStatusCode, end.status);
  if (end.error !== undefined) {
    span.setAttribute(HttpAttributes.errorType, errorTypeOf(end.error));
    span.setStatus({ code: SpanStatusCode.ERROR, message: end.error instanceof Error ? end.error.message : String(end.error) });
  } else if (end.status !== undefined && isFailedStatus(kinds.get(span), end.status)) {
    // The status code is the description: the conventions ask for no message beside it.
    span.setAttribute(HttpAttributes.errorType, String(end.status));
    span.setStatus({ code: SpanStatusCode.ERROR });
  }
  span.end();
}

function isSpan(target: Span | Context): target is Span {
  return typeof (target as Partial<Span>).spanContext === "function";
}

/**
 * `{ trace_id, span_id }` of a span (or of a context's span) for pino: bind them once on a child
 * logger per request or job, `log.child(logFields(span))`, and every line it writes joins the
 * trace. `{}` when there is no trace (tracing off). Sampled-out spans still give their ids: the
 * trace exists downstream even if this process does not export it.
 */
export function logFields(target: Span | Context): TraceLogFields {
  const sc: SpanContext | undefined = isSpan(target) ? target.spanContext() : trace.getSpanContext(target);
  if (sc === undefined || sc === INVALID_SPAN_CONTEXT || !isSpanContextValid(sc)) return NO_LOG_FIELDS;
  return { trace_id: sc.traceId, span_id: sc.spanId };
}
