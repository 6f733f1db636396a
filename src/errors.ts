/**
 * slowlane's one error model. Every error raised on purpose is a {@link SlowlaneError} with a stable
 * `code`; the {@link ERRORS} table gives each code its title and, where the code can reach a client,
 * its HTTP status. The classes know nothing of HTTP: `shared/problem.ts` is the one place that turns
 * any error into an answer (RFC 9457 problem+json, `type` = `urn:slowlane:error:<code>`).
 *
 * Codes are a public contract (problem+json, logs, job records): never reuse or rename one.
 * `test/unit/errors.test.ts` checks that each is in the README's table. Error classes are named for
 * what failed (`BackendTimeoutError`); some codes keep an older word (`UPSTREAM`) because they are
 * stored in job records and read by clients.
 */

export const ErrorCodes = {
  CONFIG_INVALID: "SLOWLANE_CONFIG_INVALID",
  USAGE: "SLOWLANE_USAGE",
  NATS_UNAVAILABLE: "SLOWLANE_NATS_UNAVAILABLE",
  NOT_PROVISIONED: "SLOWLANE_NOT_PROVISIONED",
  JOB_NOT_FOUND: "SLOWLANE_JOB_NOT_FOUND",
  JOB_EXPIRED: "SLOWLANE_JOB_EXPIRED",
  JOBS_COMMAND: "SLOWLANE_JOBS_COMMAND",
  METHOD_NOT_ALLOWED: "SLOWLANE_METHOD_NOT_ALLOWED",
  BODY_TOO_LARGE: "SLOWLANE_BODY_TOO_LARGE",
  BAD_REQUEST: "SLOWLANE_BAD_REQUEST",
  UPSTREAM_UNREACHABLE: "SLOWLANE_UPSTREAM_UNREACHABLE",
  UPSTREAM_TIMEOUT: "SLOWLANE_UPSTREAM_TIMEOUT",
  UPSTREAM_STATUS: "SLOWLANE_UPSTREAM_STATUS",
  RESPONSE_TOO_LARGE: "SLOWLANE_RESPONSE_TOO_LARGE",
  REQUEST_BODY_MISSING: "SLOWLANE_REQUEST_BODY_MISSING",
  STORED_DATA_UNREADABLE: "SLOWLANE_STORED_DATA_UNREADABLE",
  JOB_INTERRUPTED: "SLOWLANE_JOB_INTERRUPTED",
  DEADLINE_EXCEEDED: "SLOWLANE_DEADLINE_EXCEEDED",
  STORED_REQUEST_INVALID: "SLOWLANE_STORED_REQUEST_INVALID",
  JOB_CANCELED: "SLOWLANE_JOB_CANCELED",
  NOT_FOUND: "SLOWLANE_NOT_FOUND",
  INTERNAL: "SLOWLANE_INTERNAL",
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** What a code means: a short, stable title and, for codes a client can receive, the HTTP status. */
export interface ErrorKind {
  readonly title: string;
  readonly status?: number;
}

/** The one table of codes. A code without `status` never reaches a client (config, usage, ops). */
export const ERRORS: Readonly<Record<ErrorCode, ErrorKind>> = {
  [ErrorCodes.CONFIG_INVALID]: { title: "Invalid configuration" },
  [ErrorCodes.USAGE]: { title: "Bad command line" },
  [ErrorCodes.NATS_UNAVAILABLE]: { title: "Service Unavailable", status: 503 },
  [ErrorCodes.NOT_PROVISIONED]: { title: "Nothing provisioned in JetStream" },
  [ErrorCodes.JOB_NOT_FOUND]: { title: "Not Found", status: 404 },
  [ErrorCodes.JOB_EXPIRED]: { title: "Gone", status: 410 },
  [ErrorCodes.JOBS_COMMAND]: { title: "Jobs command failed" },
  [ErrorCodes.METHOD_NOT_ALLOWED]: { title: "Method Not Allowed", status: 405 },
  [ErrorCodes.BODY_TOO_LARGE]: { title: "Content Too Large", status: 413 },
  [ErrorCodes.BAD_REQUEST]: { title: "Bad Request", status: 400 },
  [ErrorCodes.UPSTREAM_UNREACHABLE]: { title: "Bad Gateway", status: 502 },
  [ErrorCodes.UPSTREAM_TIMEOUT]: { title: "Gateway Timeout", status: 504 },
  [ErrorCodes.UPSTREAM_STATUS]: { title: "Bad Gateway", status: 502 },
  [ErrorCodes.RESPONSE_TOO_LARGE]: { title: "Bad Gateway", status: 502 },
  [ErrorCodes.REQUEST_BODY_MISSING]: { title: "Bad Gateway", status: 502 },
  [ErrorCodes.STORED_DATA_UNREADABLE]: { title: "Stored data unreadable", status: 500 },
  [ErrorCodes.JOB_INTERRUPTED]: { title: "Bad Gateway", status: 502 },
  [ErrorCodes.DEADLINE_EXCEEDED]: { title: "Gateway Timeout", status: 504 },
  [ErrorCodes.STORED_REQUEST_INVALID]: { title: "Stored request invalid", status: 500 },
  [ErrorCodes.JOB_CANCELED]: { title: "Gone", status: 410 },
  [ErrorCodes.NOT_FOUND]: { title: "Not Found", status: 404 },
  [ErrorCodes.INTERNAL]: { title: "Internal Server Error", status: 500 },
};

/** The kind of a code read back from storage (a job record written by another version may hold any string). */
export function errorKindOf(code: string): ErrorKind {
  return (ERRORS as Record<string, ErrorKind | undefined>)[code] ?? ERRORS[ErrorCodes.INTERNAL];
}

export interface SlowlaneErrorOptions {
  cause?: unknown;
  /** Extra members for a problem+json body (RFC 9457 extension members). */
  extensions?: Record<string, unknown>;
}

/** Base class: every error slowlane raises on purpose has a stable code from {@link ERRORS}. */
export class SlowlaneError extends Error {
  readonly code: ErrorCode;
  readonly extensions: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: SlowlaneErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.extensions = options.extensions ?? {};
  }

  /** The HTTP status of this code; `undefined` for errors that never reach a client. */
  get statusCode(): number | undefined {
    return ERRORS[this.code].status;
  }

  get title(): string {
    return ERRORS[this.code].title;
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
    super(ErrorCodes.CONFIG_INVALID, formatConfigProblems(file, problems), options);
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

/** A command line slowlane cannot use (exit 2 with the usage text). */
export class UsageError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.USAGE, message, options);
  }
}

/** JetStream could not be reached or did not confirm a write: the client should retry later. */
export class NatsUnavailableError extends SlowlaneError {
  constructor(message = "the job queue is unavailable; nothing was accepted, retry later", options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.NATS_UNAVAILABLE, message, options);
  }
}

/** A stream or bucket slowlane needs is not there: no proxy or worker has run with this prefix yet. */
export class NotProvisionedError extends SlowlaneError {
  readonly prefix: string;
  readonly missing: readonly string[];

  constructor(prefix: string, missing: readonly string[]) {
    super(
      ErrorCodes.NOT_PROVISIONED,
      `nothing provisioned for stream prefix ${prefix} yet (missing: ${missing.join(", ")}); ` +
        "a slowlane proxy or worker creates it on start",
    );
    this.prefix = prefix;
    this.missing = missing;
  }
}

export class JobNotFoundError extends SlowlaneError {
  constructor(message = "no such job (it may never have existed or has expired)", options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.JOB_NOT_FOUND, message, options);
  }
}

export class JobExpiredError extends SlowlaneError {
  constructor(options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.JOB_EXPIRED, "the job finished and its result has expired", options);
  }
}

/** A `slowlane jobs` operation failed (no such job, not failed, no dead letter, changed meanwhile...); exit 1. */
export class JobsCommandError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.JOBS_COMMAND, message, options);
  }
}

/** No such endpoint (the admin server's unknown paths). */
export class NotFoundError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.NOT_FOUND, message, options);
  }
}

export class MethodNotAllowedError extends SlowlaneError {
  readonly allow: readonly string[];
  constructor(allow: readonly string[], options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.METHOD_NOT_ALLOWED, `allowed methods: ${allow.join(", ")}`, options);
    this.allow = allow;
  }
}

export class BodyTooLargeError extends SlowlaneError {
  constructor(limitBytes: number, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.BODY_TOO_LARGE, `the request body exceeds the ${limitBytes}-byte limit of this route`, {
      ...options,
      extensions: { limitBytes, ...options.extensions },
    });
  }
}

export class BadRequestError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.BAD_REQUEST, message, options);
  }
}

/** The backend could not be reached (connection refused, reset, DNS). */
export class BackendUnreachableError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.UPSTREAM_UNREACHABLE, message, options);
  }
}

/** The backend did not answer within the route's timeout. */
export class BackendTimeoutError extends SlowlaneError {
  constructor(message: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.UPSTREAM_TIMEOUT, message, options);
  }
}

/** The backend answered a status listed in the route's `retryOn` on every attempt. */
export class BackendStatusError extends SlowlaneError {
  /** The backend's last status. */
  readonly backendStatus: number;
  /** Milliseconds the backend asked to wait (`Retry-After` on a 429 or 503), if it said. */
  readonly retryAfterMs: number | undefined;

  constructor(backendStatus: number, retryAfterMs?: number, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.UPSTREAM_STATUS, `the backend answered ${backendStatus}, a status retried by this route`, {
      ...options,
      extensions: { upstreamStatus: backendStatus, ...options.extensions },
    });
    this.backendStatus = backendStatus;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The backend's response body exceeded the route's `maxResponseSize`; never retried. */
export class ResponseTooLargeError extends SlowlaneError {
  constructor(limitBytes: number, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.RESPONSE_TOO_LARGE, `the backend's response exceeds the ${limitBytes}-byte maxResponseSize of this route`, {
      ...options,
      extensions: { limitBytes, ...options.extensions },
    });
  }
}

/** A claim-checked request body is gone from the Object Store (expired, or never written): the job cannot run. */
export class RequestBodyMissingError extends SlowlaneError {
  constructor(options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.REQUEST_BODY_MISSING, "the stored request body of this job is gone (it expired or was never written)", options);
  }
}

/** A job kept being interrupted mid-call (its worker crashed or was killed each time): failed as poison. */
export class JobInterruptedError extends SlowlaneError {
  constructor(interruptions: number, options: SlowlaneErrorOptions = {}) {
    super(
      ErrorCodes.JOB_INTERRUPTED,
      `the job was interrupted mid-call ${interruptions} times (its worker crashed, was killed or lost NATS each time)`,
      options,
    );
  }
}

/** The job waited in the queue past its route's `deadline` before its first call: it is failed unsent. */
export class DeadlineExceededError extends SlowlaneError {
  constructor(deadlineMs: number, options: SlowlaneErrorOptions = {}) {
    super(
      ErrorCodes.DEADLINE_EXCEEDED,
      `the job waited longer than its route's ${deadlineMs} ms deadline before a worker could call the backend; it was not sent`,
      options,
    );
  }
}

/**
 * What the queue holds for a job is not a request slowlane can send (no envelope, a method that is
 * not an HTTP token, a path that does not start with a single `/`): failed without calling the backend.
 */
export class StoredRequestInvalidError extends SlowlaneError {
  constructor(reason: string, options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.STORED_REQUEST_INVALID, `the job's stored request cannot be sent: ${reason}`, options);
  }
}

/** The job was canceled (`DELETE` on its status URL): it has no result. */
export class JobCanceledError extends SlowlaneError {
  constructor(options: SlowlaneErrorOptions = {}) {
    super(ErrorCodes.JOB_CANCELED, "the job was canceled; it has no result", options);
  }
}

/** An error's message, for log lines and one-line reports. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
