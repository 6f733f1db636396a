/**
 * One attempt at the backend: the stored request replayed with a long timeout.
 *
 * undici's own headersTimeout and bodyTimeout (300 s by default, which is also why a plain
 * `fetch` gives up on long calls) are switched off on this Agent: the route's `timeout` alone
 * bounds an attempt, through an AbortSignal that covers connecting, waiting and reading the body.
 * The response body is handed over as it arrives, so the caller can store it without holding it
 * all in memory.
 */
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { Agent, request } from "undici";
import { BackendTimeoutError, BackendUnreachableError } from "../errors.js";
import { toHeaderPairs, withoutHopByHop } from "../shared/hop-by-hop.js";
import type { JobRequest } from "../jobs/envelope.js";
import { injectTraceHeaders } from "../tracing/index.js";
import type { Context } from "@opentelemetry/api";

export interface BackendResponse {
  readonly status: number;
  /** Flat name/value pairs, hop-by-hop and Content-Length removed. */
  readonly headers: string[];
  /** A header's value (lower-case name), for the ones the worker reads itself (Retry-After). */
  header(name: string): string | undefined;
  /**
   * The body as it arrives. Iterating it throws {@link BackendTimeoutError} or
   * {@link BackendUnreachableError} when the call times out or the connection breaks mid-body.
   */
  readonly body: AsyncIterable<Uint8Array>;
  /** Drops the rest of the body and frees the connection. */
  discard(): void;
}

export function createBackendAgent(): Agent {
  return new Agent({
    headersTimeout: 0,
    bodyTimeout: 0,
    keepAliveTimeout: 4_000,
    connect: { timeout: 10_000 },
  });
}

export interface BackendCallOptions {
  agent: Agent;
  /** The absolute URL to call: the backend's base URL and the job's path (see `toBackendUrl`). */
  url: string;
  request: JobRequest;
  /** The request body: bytes from the queue message, or a stream from the Object Store (claim check). */
  body: Uint8Array | ReadableStream<Uint8Array>;
  timeoutMs: number;
  /** Aborts the call early (shutdown, cancellation); the error is then the signal's reason. */
  signal?: AbortSignal;
  /** The client span's context, sent as `traceparent`/`tracestate` in place of the stored ones (tracing on). */
  trace?: Context | undefined;
}

/** Dropped from stored responses: the result endpoint sets it from the stored body's size. */
const RECOMPUTED = new Set(["content-length"]);

/**
 * The call's abort signal: aborted when `timeoutMs` passes or `outer` aborts, whichever is first,
 * until `settle()`. One controller and one timer per call, where `AbortSignal.timeout` and
 * `AbortSignal.any` made three signals and their listeners (profiled: about 3% of a drain's CPU).
 */
class CallDeadline {
  readonly #controller = new AbortController();
  readonly #timer: NodeJS.Timeout;
  readonly #outer: AbortSignal | undefined;
  readonly #onOuterAbort = (): void => this.#controller.abort();
  timedOut = false;

  constructor(timeoutMs: number, outer: AbortSignal | undefined) {
    // Unref'd, as `AbortSignal.timeout`'s is: the call's socket, not its deadline, keeps the process up.
    this.#timer = setTimeout(() => {
      this.timedOut = true;
      this.#controller.abort();
    }, timeoutMs).unref();
    this.#outer = outer;
    if (outer?.aborted) this.#controller.abort();
    else outer?.addEventListener("abort", this.#onOuterAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The call is over (answered in full, failed, or dropped): nothing aborts it any more. */
  settle(): void {
    clearTimeout(this.#timer);
    this.#outer?.removeEventListener("abort", this.#onOuterAbort);
  }
}

export async function callBackend(options: BackendCallOptions): Promise<BackendResponse> {
  const { request: job, timeoutMs } = options;
  const deadline = new CallDeadline(timeoutMs, options.signal);
  const signal = deadline.signal;
  const classify = (err: unknown): unknown => {
    if (deadline.timedOut) return new BackendTimeoutError(`the backend did not answer within ${timeoutMs} ms`, { cause: err });
    if (options.signal?.aborted) return options.signal.reason ?? err;
    // The address and error code (`ECONNREFUSED 10.0.0.7:3000`) stay in `cause`, for the log:
    // the message is stored where clients read it.
    return new BackendUnreachableError("the backend could not be reached", { cause: err });
  };

  const headers = job.headers.slice();
  if (options.trace) injectTraceHeaders(options.trace, headers);
  let body: Buffer | Readable | null = null;
  if (options.body instanceof Uint8Array) {
    const hasBody = options.body.byteLength > 0 || !["GET", "HEAD"].includes(job.method);
    if (hasBody) body = Buffer.from(options.body.buffer, options.body.byteOffset, options.body.byteLength);
  } else {
    // A stream has no length undici can see: send the stored size, so the backend gets no chunked body.
    if (job.storedBody !== undefined) headers.push("content-length", String(job.storedBody.bytes));
    body = Readable.fromWeb(options.body as WebReadableStream<Uint8Array>);
  }

  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(options.url, {
      dispatcher: options.agent,
      method: job.method as "GET",
      // Filtered on accept (hop-by-hop and Content-Length gone, X-Forwarded-* added): sent as stored.
      headers,
      body,
      signal,
    });
  } catch (err) {
    deadline.settle();
    if (body instanceof Readable) body.destroy();
    throw classify(err);
  }
  const raw = res.body;
  async function* chunks(): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of raw as AsyncIterable<Buffer>) yield chunk;
    } catch (err) {
      throw classify(err);
    } finally {
      deadline.settle();
    }
  }
  return {
    status: res.statusCode,
    headers: withoutHopByHop(toHeaderPairs(res.headers), RECOMPUTED),
    header(name) {
      const value = res.headers[name];
      return Array.isArray(value) ? value[0] : value;
    },
    body: chunks(),
    discard() {
      deadline.settle();
      // Destroying a body nobody reads makes it emit an abort error: expected here, not worth a crash.
      raw.on("error", () => undefined);
      raw.destroy();
    },
  };
}

/** A network error in full, for the log: its code and message (`ECONNREFUSED (connect ECONNREFUSED 10.0.0.7:3000)`). */
export function describeNetworkError(err: Error): string {
  const cause = err.cause instanceof Error ? err.cause : undefined;
  const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? (err as NodeJS.ErrnoException).code;
  return code ? `${code} (${cause?.message ?? err.message})` : err.message;
}
