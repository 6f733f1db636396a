import type { JobStatus } from "../jobs/record.js";

/** What a forwarder reports as it works, for metrics. Every method is optional and must not throw. */
export interface ForwarderObserver {
  /** A job was taken from the queue and its backend call is starting. */
  jobStarted?(route: string, attempt: number, redelivered: boolean): void;
  /** A backend call ended: `outcome` is the HTTP status, or `timeout`, `unreachable`, `aborted`, `too_large`, `body_missing`, `error`. */
  callFinished?(route: string, outcome: string, durationMs: number): void;
  /** A job reached a final state. */
  jobFinished?(route: string, status: JobStatus): void;
  /** A route's circuit opened (`open`: the backend is unreachable, the route is paused in this process) or closed. */
  circuitChanged?(route: string, open: boolean): void;
  /** Writing a job's result (its body or its completed record) failed after the backend answered; the write is retried. */
  resultStoreFailed?(route: string): void;
}
