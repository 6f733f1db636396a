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

export function toRedactPaths(extraHeaders: readonly string[] = []): string[] {
  const names = [...new Set([...ALWAYS_REDACTED_HEADERS, ...extraHeaders.map((h) => h.toLowerCase())])];
  return names.flatMap((name) => {
    const key = JSON.stringify(name);
    return [`headers[${key}]`, `*.headers[${key}]`, `*.*.headers[${key}]`];
  });
}

export function createLogger(settings: LoggerSettings = {}): Logger {
  const options: LoggerOptions = {
    level: settings.level ?? "info",
    base: { name: "slowlane" },
    redact: { paths: toRedactPaths(settings.redactHeaders), censor: "[redacted]" },
    serializers: { err: pino.stdSerializers.err },
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
