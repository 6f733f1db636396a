/**
 * The one place errors become HTTP answers: `application/problem+json` (RFC 9457). A SlowlaneError
 * whose code has an HTTP status (see `ERRORS`) says its own status and detail; anything else is a
 * 500 whose detail stays in the log, never in the answer.
 */
import type { ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { ErrorCodes, ERRORS, MethodNotAllowedError, SlowlaneError } from "../errors.js";
import type { ErrorCode } from "../errors.js";
import type { Logger } from "../log.js";

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  [extension: string]: unknown;
}

/** The problem `type` of a code: a URN, stable as the code itself (the README's error table explains each). */
export function problemType(code: ErrorCode): string {
  return `urn:slowlane:error:${code}`;
}

/** A client-facing error: a SlowlaneError whose code has an HTTP status. */
function isPublic(err: unknown): err is SlowlaneError & { statusCode: number } {
  return err instanceof SlowlaneError && err.statusCode !== undefined;
}

export function toProblem(err: unknown): ProblemBody {
  if (isPublic(err)) {
    return { ...err.extensions, type: problemType(err.code), title: err.title, status: err.statusCode, detail: err.message, code: err.code };
  }
  const internal = ERRORS[ErrorCodes.INTERNAL];
  return {
    type: problemType(ErrorCodes.INTERNAL),
    title: internal.title,
    status: internal.status ?? 500,
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
  if (!isPublic(err)) options.log?.error({ err }, "unexpected error while answering a request");
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

/** A problem+json answer written on a raw socket (an upgrade request has no ServerResponse), then the socket closed. */
export function sendProblemOnSocket(socket: Duplex, err: unknown): void {
  const problem = toProblem(err);
  const body = JSON.stringify(problem);
  socket.end(
    `HTTP/1.1 ${problem.status} ${problem.title}\r\ncontent-type: application/problem+json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** A small JSON answer with an exact Content-Length. */
export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string | number> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(body);
}
