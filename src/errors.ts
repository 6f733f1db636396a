/**
 * slowlane's errors: one base class with a stable `code` and the HTTP status it maps to.
 * Codes are part of the public contract (they appear in problem+json `type` URIs and in logs):
 * never reuse or rename one. `test/unit/errors.test.ts` checks each is documented in the README.
 */

export const ErrorCodes = {
  CONFIG_INVALID: "SLOWLANE_CONFIG_INVALID",
  NATS_UNAVAILABLE: "SLOWLANE_NATS_UNAVAILABLE",
  JOB_NOT_FOUND: "SLOWLANE_JOB_NOT_FOUND",
  JOB_EXPIRED: "SLOWLANE_JOB_EXPIRED",
  METHOD_NOT_ALLOWED: "SLOWLANE_METHOD_NOT_ALLOWED",
  BODY_TOO_LARGE: "SLOWLANE_BODY_TOO_LARGE",
  BAD_REQUEST: "SLOWLANE_BAD_REQUEST",
  UPSTREAM_UNREACHABLE: "SLOWLANE_UPSTREAM_UNREACHABLE",
  UPSTREAM_TIMEOUT: "SLOWLANE_UPSTREAM_TIMEOUT",
  UPSTREAM_STATUS: "SLOWLANE_UPSTREAM_STATUS",
  RESPONSE_TOO_LARGE: "SLOWLANE_RESPONSE_TOO_LARGE",
  JOB_INTERRUPTED: "SLOWLANE_JOB_INTERRUPTED",
  JOB_CANCELED: "SLOWLANE_JOB_CANCELED",
  NOT_FOUND: "SLOWLANE_NOT_FOUND",
  INTERNAL: "SLOWLANE_INTERNAL",
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface SlowlaneErrorOptions {
  cause?: unknown;
  /** Extra members for the problem+json body (RFC 9457 extension members). */
  extensions?: Record<string, unknown>;
}

/** Base class: every error slowlane raises on purpose has a stable code and an HTTP status. */
export class SlowlaneError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  /** A short, stable, human title (the problem+json `title`). */
  readonly title: string;
  readonly extensions: Record<string, unknown>;

  constructor(
    code: ErrorCode,
    statusCode: number,
    title: string,
    message: string,
    options: SlowlaneErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.statusCode = statusCode;
    this.title = title;
    this.extensions = options.extensions ?? {};
  }
}

/** One problem found in a configuration file. `path` is the key path, e.g. `routes[1].timeout`. */
export interface ConfigProblem {
  path: string;
  message: string;
  /** 1-based line and column in the source file, when the problem has a place there. */
  line?: number;
  column?: number;
}

/** A configuration that cannot be used; `problems` lists every problem found, not just the first. */
export class ConfigError extends SlowlaneError {
  readonly file: string | undefined;
  readonly problems: readonly ConfigProblem[];

  constructor(file: string | undefined, problems: readonly ConfigProblem[], options: SlowlaneErrorOptions = {}) {
    super(
      ErrorCodes.CONFIG_INVALID,
      500,
      "Invalid configuration",
      formatConfigProblems(file, problems),
      options,
    );
    this.file = file;
    this.problems = problems;
  }
}

/** Renders problems one per line as `file:line:column path: message`, the way compilers do. */
export function formatConfigProblems(file: string | undefined, problems: readonly ConfigProblem[]): string {
  const lines = problems.map((p) => {
    const where = [file ?? "<config>", p.line, p.column].filter((x) => x !== undefined).join(":");
    return p.path ? `${where} ${p.path}: ${p.message}` : `${where} ${p.message}`;
  });
  const noun = problems.length === 1 ? "problem" : "problems";
  return `invalid configuration (${problems.length} ${noun}):\n${lines.map((l) => `  ${l}`).join("\n")}`;
}

/** JetStream could not be reached or did not confirm a write: the client should retry later. */
export class NatsUnavailableError extends SlowlaneError {
  constructor(message = "the job queue is unavailable; nothing was accepted, retry later", options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.NATS_UNAVAILABLE, 503, "Service Unavailable", message, options);
  }
}

export class JobNotFoundError extends SlowlaneError {
  constructor(options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.JOB_NOT_FOUND, 404, "Not Found", "no such job (it may never have existed or has expired)", options);
  }
}

export class JobExpiredError extends SlowlaneError {
  constructor(options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.JOB_EXPIRED, 410, "Gone", "the job finished and its result has expired", options);
  }
}

/** No such endpoint (the admin server's unknown paths). */
export class NotFoundError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.NOT_FOUND, 404, "Not Found", message, options);
  }
}

export class MethodNotAllowedError extends SlowlaneError {
  readonly allow: readonly string[];
  constructor(allow: readonly string[], options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.METHOD_NOT_ALLOWED, 405, "Method Not Allowed", `allowed methods: ${allow.join(", ")}`, options);
    this.allow = allow;
  }
}

export class BodyTooLargeError extends SlowlaneError {
  constructor(limitBytes: number, options: SlowlaneErrorOptions = {}) {
    super(
      ErrorCodes.BODY_TOO_LARGE,
      413,
      "Content Too Large",
      `the request body exceeds the ${limitBytes}-byte limit of this route`,
      { ...options, extensions: { limitBytes, ...options.extensions } },
    );
  }
}

export class BadRequestError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.BAD_REQUEST, 400, "Bad Request", message, options);
  }
}

/** The backend could not be reached (connection refused, reset, DNS). Replayed to clients as 502. */
export class UpstreamUnreachableError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.UPSTREAM_UNREACHABLE, 502, "Bad Gateway", message, options);
  }
}

/** The backend did not answer within the route's timeout. Replayed to clients as 504. */
export class UpstreamTimeoutError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.UPSTREAM_TIMEOUT, 504, "Gateway Timeout", message, options);
  }
}

/** The backend answered a status listed in the route's `retryOn` on every attempt. Replayed as 502. */
export class UpstreamStatusError extends SlowlaneError {
  /** The backend's last status. */
  readonly upstreamStatus: number;
  /** Milliseconds the backend asked to wait (`Retry-After` on a 429 or 503), if it said. */
  readonly retryAfterMs: number | undefined;

  constructor(upstreamStatus: number, retryAfterMs?: number, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.UPSTREAM_STATUS, 502, "Bad Gateway", `the backend answered ${upstreamStatus}, a status retried by this route`, {
      ...options,
      extensions: { upstreamStatus, ...options.extensions },
    });
    this.upstreamStatus = upstreamStatus;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The backend's response body exceeded the route's `maxResponseSize`. Replayed as 502; never retried. */
export class ResponseTooLargeError extends SlowlaneError {
  constructor(limitBytes: number, options: SlowlaneErrorOptions = {}) {
    super(
      ErrorCodes.RESPONSE_TOO_LARGE,
      502,
      "Bad Gateway",
      `the backend's response exceeds the ${limitBytes}-byte maxResponseSize of this route`,
      { ...options, extensions: { limitBytes, ...options.extensions } },
    );
  }
}

/** A job kept being interrupted mid-call (its worker crashed or was killed each time): failed as poison. */
export class JobInterruptedError extends SlowlaneError {
  constructor(interruptions: number, options: SlowlaneErrorOptions = {}) {
    super(
      ErrorCodes.JOB_INTERRUPTED,
      502,
      "Bad Gateway",
      `the job was interrupted mid-call ${interruptions} times (its worker crashed, was killed or lost NATS each time)`,
      options,
    );
  }
}

/** The job was canceled (`DELETE` on its status URL): it has no result. */
export class JobCanceledError extends SlowlaneError {
  constructor(options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.JOB_CANCELED, 410, "Gone", "the job was canceled; it has no result", options);
  }
}
