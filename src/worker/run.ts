/** What one delivery of a job to this worker works with: the forwarder's services, the message, the job and its record. */
import type { JsMsg } from "@nats-io/jetstream";
import type { Agent } from "undici";
import type { RouteConfig } from "../config/index.js";
import type { Logger } from "../log.js";
import type { JobRequest } from "../jobs/envelope.js";
import type { JobStore } from "../jobs/store.js";
import type { TrackedJob } from "../jobs/transitions.js";
import type { CallGate } from "./circuit-board.js";
import type { TracedSpan, Tracing } from "../tracing/index.js";
import type { ForwarderObserver } from "./observer.js";

/** What one attempt needs from the forwarder that runs it. */
export interface AttemptDeps {
  readonly store: JobStore;
  readonly log: Logger;
  readonly agent: Agent;
  readonly observer: ForwarderObserver | undefined;
  /** Spans for attempts and backend calls (off: `DISABLED_TRACING`). */
  readonly tracing: Tracing;
  /** The backend's base URL in force now (it may change on reload). */
  backendUrl(): string;
  /** How often to heartbeat a running call's message, in ms (a third of the consumer's AckWait, or less). */
  heartbeatMs(): number;
  /** How old a running job's record may get before the worker writes it again, in ms (a third of the jobs bucket's max_age). */
  recordRefreshMs(): number;
}

/** How the forwarder steers one delivery: abort it, and reach its heartbeat while the call runs. */
export interface CallControl {
  readonly abort: AbortController;
  /** What the route's circuit allows, and where the call reports what it found out about the backend. */
  readonly gate: CallGate;
  /** Sends a heartbeat now and touches the record if it is getting old; set while the call runs. */
  refresh: (() => Promise<void>) | undefined;
}

/** One job's run on this worker: the message, the job, its route's settings and the record as last written. */
export interface Run {
  readonly deps: AttemptDeps;
  readonly msg: JsMsg;
  readonly job: JobRequest;
  readonly route: RouteConfig;
  readonly tracked: TrackedJob;
  /** Epoch ms when this run last wrote the record (touches included). */
  writtenAt: number;
  /** The attempt's span, when tracing is on (`deps.log` then carries its ids: `attempt-trace.ts`). */
  readonly trace?: TracedSpan;
  /** The backend call's span while the call runs. */
  backendCall?: TracedSpan | undefined;
}

/**
 * Rejects an attempt whose message must go back to the queue as it is: the forwarder naks it with
 * `delayMs` (a shutdown naks at once, whatever the error).
 */
export class GiveBackError extends Error {
  constructor(
    readonly delayMs: number,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "GiveBackError";
  }
}
