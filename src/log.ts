/**
 * The pino logger factory. Every log line is JSON; secrets in headers are redacted wherever a
 * `headers` object appears (one or two levels deep), so a debug line can never leak a credential.
 */
import { pino } from "pino";
import type { DestinationStream, Logger, LoggerOptions } from "pino";

export type { Logger } from "pino";

/** Headers whose values never reach a log line. Configured ones (`log.redactHeaders`) are added. */
export const ALWAYS_REDACTED_HEADERS = ["authorization", "proxy-authorization", "cookie", "set-cookie"] as const;

export interface LoggerSettings {
  /** pino level; `LOG_LEVEL` in the CLI. Default `info`. */
  level?: string;
  /** Extra header names to redact, lower-case. */
  redactHeaders?: readonly string[];
  /** Where lines go (tests pass a sink); default stdout. */
  destination?: DestinationStream;
}

/** The header names `createLogger` redacts: the built-in ones and the configured ones, lower-case. */
function redactedHeaderNames(extraHeaders: readonly string[] = []): ReadonlySet<string> {
  return new Set([...ALWAYS_REDACTED_HEADERS, ...extraHeaders.map((h) => h.toLowerCase())]);
}

const CENSOR = "[redacted]";

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A copy of `headers` with the secret ones censored, or `headers` itself when it holds none. */
function censorHeaders(headers: Record<string, unknown>, secret: ReadonlySet<string>): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const name of Object.keys(headers)) {
    if (!secret.has(name.toLowerCase())) continue;
    copy ??= { ...headers };
    copy[name] = CENSOR;
  }
  return copy ?? headers;
}

/**
 * `obj` with every `headers` object at most `depth` levels below it censored: copies along the way
 * where something is censored, never a change to the caller's objects.
 */
function censorWithin(obj: Record<string, unknown>, secret: ReadonlySet<string>, depth: number): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const key in obj) {
    const value = obj[key];
    if (!isObject(value) || !Object.prototype.hasOwnProperty.call(obj, key)) continue;
    const censored = key === "headers" ? censorHeaders(value, secret) : depth > 0 ? censorWithin(value, secret, depth - 1) : value;
    if (censored === value) continue;
    copy ??= { ...obj };
    copy[key] = censored;
  }
  return copy ?? obj;
}

/**
 * Redaction by a log formatter rather than pino's `redact` paths: those need wildcards
 * (`*.headers`, `*.*.headers`) to reach headers wherever they are logged, and pino's wildcard
 * redaction walks and copies every line's object (about a tenth of the proxy's CPU at accept, on
 * lines that carry no headers at all). This looks at a line's own keys, two levels down, and copies
 * only what it censors.
 */
export function createLogger(settings: LoggerSettings = {}): Logger {
  const secret = redactedHeaderNames(settings.redactHeaders);
  const options: LoggerOptions = {
    level: settings.level ?? "info",
    base: { name: "slowlane" },
    formatters: { log: (obj) => censorWithin(obj, secret, 2) },
    serializers: {
      err: pino.stdSerializers.err,
      // A child's bindings skip the formatter, not the serializers: `log.child({ headers })`.
      headers: (headers: unknown) => (isObject(headers) ? censorHeaders(headers, secret) : headers),
    },
  };
  return settings.destination ? pino(options, settings.destination) : pino(options);
}

/**
 * `log.child(bindings())`, made on the first use only: for a request or a job whose lines are rare
 * (a passthrough's error line), where a child made up front would cost more than the request's
 * spans (pino's `child()` takes a few microseconds). Every method and property is the child's.
 */
export function lazyChild(log: Logger, bindings: () => Record<string, unknown>): Logger {
  let child: Logger | undefined;
  const target = (): Logger => (child ??= log.child(bindings()));
  return new Proxy(log, {
    get(_, prop) {
      const value: unknown = Reflect.get(target(), prop);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target()) : value;
    },
  });
}
