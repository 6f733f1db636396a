/**
 * When to try a backend call again. Failures to get an answer (connection errors, timeouts) are
 * retried, and so are answers whose status the route lists in `retryOn`; any other answer is the
 * result. The wait grows by the route's `backoff`; a backend's own `Retry-After` on a 429 or 503
 * takes its place.
 */
import type { BackoffConfig } from "../config/types.js";

/**
 * Delay before attempt `nextAttempt` (2 for the first retry): exponential, capped, and with jitter
 * drawn from the upper half so that jobs that failed together do not all come back together.
 */
export function backoffDelayMs(nextAttempt: number, backoff: BackoffConfig, random = Math.random): number {
  const exp = backoff.initialMs * backoff.factor ** Math.max(0, nextAttempt - 2);
  const capped = Math.min(backoff.maxMs, exp);
  return backoff.jitter ? Math.round(capped / 2 + random() * (capped / 2)) : Math.round(capped);
}

/** Statuses whose `Retry-After` says when the backend will take the request again (RFC 9110 §10.2.3). */
const RETRY_AFTER_STATUSES = new Set([429, 503]);

/**
 * Milliseconds a `Retry-After` value asks to wait: delay-seconds or an HTTP-date. `undefined` when
 * the status does not carry one or the value is not valid.
 */
export function parseRetryAfterMs(status: number, value: string | undefined, now = Date.now()): number | undefined {
  if (!RETRY_AFTER_STATUSES.has(status) || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1_000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The wait before attempt `nextAttempt`: the backend's `Retry-After` if it gave one (capped at `backoff.maxMs`), else the backoff. */
export function retryDelayMs(nextAttempt: number, backoff: BackoffConfig, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, backoff.maxMs);
  return backoffDelayMs(nextAttempt, backoff);
}
