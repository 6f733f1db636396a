/**
 * When to try a failed backend call again. Only failures to get an answer (connection errors,
 * timeouts) are retried: any HTTP status the backend sends is a result.
 */

export interface BackoffSettings {
  /** Delay before the second attempt. */
  initialMs: number;
  /** Cap on any one delay. */
  maxMs: number;
  factor: number;
}

export const DEFAULT_BACKOFF: BackoffSettings = { initialMs: 1_000, maxMs: 60_000, factor: 2 };

/**
 * Delay before attempt `nextAttempt` (2 for the first retry): exponential, capped, with "full
 * jitter" on the upper half so that jobs that failed together do not all come back together.
 */
export function backoffDelayMs(nextAttempt: number, settings: BackoffSettings = DEFAULT_BACKOFF, random = Math.random): number {
  const exp = settings.initialMs * settings.factor ** Math.max(0, nextAttempt - 2);
  const capped = Math.min(settings.maxMs, exp);
  return Math.round(capped / 2 + random() * (capped / 2));
}
