/**
 * The one place errors become HTTP answers: `application/problem+json` (RFC 9457). A
 * SlowlaneError says its own status and detail; anything else is a 500 whose detail stays in
 * the log, never in the answer.
 */
import type { ServerResponse } from "node:http";
import { ErrorCodes, SlowlaneError, MethodNotAllowedError } from "../errors.js";
import type { Logger } from "../log.js";

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extension: string]: unknown;
}

export function toProblem(err: unknown): ProblemBody {
  if (err instanceof SlowlaneError) {
    return {
      ...err.extensions,
      type: "about:blank",
      title: err.title,
      status: err.statusCode,
      detail: err.message,
      code: err.code,
    };
  }
  return {
    type: "about:blank",
    title: "Internal Server Error",
    status: 500,
    detail: "an unexpected error occurred; it has been logged",
    code: ErrorCodes.INTERNAL,
  };
}

export interface SendProblemOptions {
  log?: Logger;
  /** Extra response headers, e.g. Retry-After on a 503. */
  headers?: Record<string, string | number>;
}

export function sendProblem(res: ServerResponse, err: unknown, options: SendProblemOptions = {}): void {
  const problem = toProblem(err);
  if (!(err instanceof SlowlaneError)) options.log?.error({ err }, "unexpected error while answering a request");
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(problem);
  const headers: Record<string, string | number> = {
    "content-type": "application/problem+json",
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    ...options.headers,
  };
  if (err instanceof MethodNotAllowedError) headers.allow = err.allow.join(", ");
  res.writeHead(problem.status, headers);
  res.end(body);
}

/** A small JSON answer with an exact Content-Length. */
export function sendJson(
  res: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string | number> = {},
): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(body);
}
