/**
 * One attempt at the backend: the stored request replayed with a long timeout.
 *
 * undici's own headersTimeout and bodyTimeout (300 s by default, which is also why a plain
 * `fetch` gives up on long calls) are switched off on this Agent: the route's `timeout` alone
 * bounds an attempt, through an AbortSignal that covers connecting, waiting and reading the body.
 */
import { Agent, request } from "undici";
import { UpstreamTimeoutError, UpstreamUnreachableError } from "../errors.js";
import { toHeaderPairs, withoutHopByHop } from "../http/hop-by-hop.js";
import type { JobRequest } from "../queue/envelope.js";

export interface BackendResponse {
  readonly status: number;
  /** Flat name/value pairs, hop-by-hop removed. */
  readonly headers: string[];
  readonly body: Uint8Array;
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
  upstream: string;
  request: JobRequest;
  body: Uint8Array;
  timeoutMs: number;
  /** Aborts the call early (shutdown, cancellation). */
  signal?: AbortSignal;
}

/** Dropped from stored responses: the result endpoint sets it from the stored body's size. */
const RECOMPUTED = new Set(["content-length"]);

export async function callBackend(options: BackendCallOptions): Promise<BackendResponse> {
  const { request: job, timeoutMs } = options;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
  const hasBody = options.body.byteLength > 0 || !["GET", "HEAD"].includes(job.method);
  try {
    const res = await request(options.upstream + job.url, {
      dispatcher: options.agent,
      method: job.method as "GET",
      // Filtered on accept (hop-by-hop and Content-Length gone, X-Forwarded-* added): sent as stored.
      headers: job.headers as string[],
      body: hasBody ? Buffer.from(options.body.buffer, options.body.byteOffset, options.body.byteLength) : null,
      signal,
    });
    const body = new Uint8Array(await res.body.arrayBuffer());
    const headers = withoutHopByHop(toHeaderPairs(res.headers), RECOMPUTED);
    return { status: res.statusCode, headers, body };
  } catch (err) {
    if (timeout.aborted) {
      throw new UpstreamTimeoutError(`the backend did not answer within ${timeoutMs} ms`, { cause: err });
    }
    if (options.signal?.aborted) throw err;
    const reason = err instanceof Error ? describeNetworkError(err) : String(err);
    throw new UpstreamUnreachableError(`the backend could not be reached: ${reason}`, { cause: err });
  }
}

function describeNetworkError(err: Error): string {
  const cause = err.cause instanceof Error ? err.cause : undefined;
  const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? (err as NodeJS.ErrnoException).code;
  return code ? `${code} (${cause?.message ?? err.message})` : err.message;
}
