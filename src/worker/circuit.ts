/**
 * One route's circuit in this worker process: closed while the backend answers, open once a call
 * finds it unreachable (connection refused or reset, DNS), until a call gets an answer again.
 *
 *   closed ─ a call fails as unreachable ─▶ open ─ any HTTP answer ─▶ closed
 *
 * While open, jobs of the route are held back (their messages go back to the queue with a delay,
 * nothing counted), and one real job's call at a time probes the backend, the waits between
 * probes growing by the route's backoff up to `backoff.max`. A call that finds the backend
 * unreachable while the circuit is open costs its job nothing; the call that opens it counts as
 * a failed attempt like any other (a request that crashes the backend stays bounded by `attempts`).
 * Timeouts and `retryOn` answers do not touch the circuit: a slow or erroring backend is not down.
 *
 * Pure state, no I/O: `circuit-board.ts` logs, publishes and reports the changes.
 */
import type { RouteConfig } from "../config/index.js";

type BackoffConfig = RouteConfig["backoff"];

/** Shortest wait before a held-back job comes back: a floor against a tight nak-redeliver loop. */
export const MIN_HOLD_MS = 100;

/** What to do with a job taken from the queue now. */
export type Admission =
  /** The circuit is closed: call the backend. */
  | { readonly kind: "call" }
  /** The circuit is open and a probe is due: this job's call is the probe. */
  | { readonly kind: "probe" }
  /** The circuit is open: do not start the job; give it back to the queue for `delayMs`. */
  | { readonly kind: "hold"; readonly delayMs: number };

export interface UnreachableOutcome {
  /** The circuit was closed and this failure opened it. */
  readonly opened: boolean;
  /** The failure costs the job nothing: the circuit was already open when it came. */
  readonly free: boolean;
}

export class RouteCircuit {
  /** Epoch ms when the circuit opened; `undefined` while closed. */
  private openedAt: number | undefined;
  private probeDelayMs = 0;
  private nextProbeAt = 0;
  private probing = false;

  constructor(private readonly random: () => number = Math.random) {}

  get isOpen(): boolean {
    return this.openedAt !== undefined;
  }

  /** Epoch ms when the circuit opened, while it is open. */
  get since(): number | undefined {
    return this.openedAt;
  }

  /** What to do with a job taken now. A `probe` must be followed by {@link answered}, {@link unreachable} or {@link probeEnded}. */
  admit(backoff: BackoffConfig, now = Date.now()): Admission {
    if (this.openedAt === undefined) return { kind: "call" };
    if (!this.probing && now >= this.nextProbeAt) {
      this.probing = true;
      return { kind: "probe" };
    }
    return { kind: "hold", delayMs: this.holdDelayMs(backoff, now) };
  }

  /** How long a job held back now waits before it comes back: about until the next probe, never past `backoff.max`. */
  holdDelayMs(backoff: BackoffConfig, now = Date.now()): number {
    const untilProbe = this.probing ? this.probeDelayMs : this.nextProbeAt - now;
    const delay = Math.min(Math.max(untilProbe, MIN_HOLD_MS), Math.max(backoff.maxMs, MIN_HOLD_MS));
    // Jitter spreads the held jobs, so they do not all come back in the same instant.
    return backoff.jitter ? Math.round(delay / 2 + this.random() * (delay / 2)) + MIN_HOLD_MS / 2 : delay;
  }

  /** A call got an HTTP answer (any status). True when that closed the circuit. */
  answered(): boolean {
    const wasOpen = this.openedAt !== undefined;
    this.openedAt = undefined;
    this.probing = false;
    this.probeDelayMs = 0;
    this.nextProbeAt = 0;
    return wasOpen;
  }

  /** A call found the backend unreachable. `probe`: it was the probe admitted by {@link admit}. */
  unreachable(probe: boolean, backoff: BackoffConfig, now = Date.now()): UnreachableOutcome {
    if (this.openedAt === undefined) {
      this.openedAt = now;
      this.probing = false;
      this.probeDelayMs = backoff.initialMs;
      this.nextProbeAt = now + this.probeDelayMs;
      return { opened: true, free: false };
    }
    if (probe) {
      this.probing = false;
      this.probeDelayMs = Math.min(Math.max(this.probeDelayMs * backoff.factor, backoff.initialMs), backoff.maxMs);
      this.nextProbeAt = now + this.probeDelayMs;
    }
    return { opened: false, free: true };
  }

  /**
   * The probe ended without telling whether the backend is up (it timed out, was aborted, or was
   * never sent: the job was canceled or found finished). `called`: a backend call was made, so the
   * next probe waits the current backoff; otherwise the next job may probe at once.
   */
  probeEnded(called: boolean, now = Date.now()): void {
    if (!this.probing) return;
    this.probing = false;
    if (called) this.nextProbeAt = now + this.probeDelayMs;
  }
}
