/**
 * When a pending job should finish, as well as one proxy can tell without asking NATS on the
 * request's path: the route's recent call durations (sampled from the completion events this proxy
 * sees anyway) and the jobs ahead of it (the route consumer's pending and in-flight counts, read in
 * the background at most every 2 s). No estimate when the proxy has seen no call of the route yet,
 * or for a running call that is already past the usual duration.
 */
import type { RouteConfig } from "../config/index.js";
import { JobStatus } from "../jobs/record.js";
import type { JobStatusBody } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";

/** Calls remembered per route. */
const SAMPLES = 16;
/** At most one event parsed per route in this time, for sampling (a busy route has thousands a second). */
const SAMPLE_EVERY_MS = 50;
/** How long a reading of a route's queue counts serves estimates. */
const DEPTH_TTL_MS = 2_000;

interface RouteSamples {
  readonly durations: number[];
  next: number;
  lastSampleAtMs: number;
}

interface Depth {
  readonly pending: number;
  readonly inFlight: number;
  readonly atMs: number;
}

export interface CompletionEstimator {
  /** For the job watch: offered every event's route and a parser; samples the durations of completed calls. */
  offer(route: string, parse: () => JobStatusBody | undefined): void;
  /** Epoch ms when a pending job is expected to finish; `undefined` when there is no estimate. */
  estimate(job: Pick<JobStatusBody, "route" | "status" | "updatedAt">, route: Pick<RouteConfig, "concurrency">, now?: number): number | undefined;
}

/** `Retry-After` for an estimate: the time left in whole seconds, at least 1, at most the route's `retryAfter`. */
export function toRetryAfterS(etaMs: number | undefined, retryAfterS: number, now = Date.now()): number {
  if (etaMs === undefined) return retryAfterS;
  return Math.min(retryAfterS, Math.max(1, Math.ceil((etaMs - now) / 1_000)));
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

export function createCompletionEstimator(store: () => JobStore | undefined): CompletionEstimator {
  const samples = new Map<string, RouteSamples>();
  const depths = new Map<string, Depth>();
  const reading = new Set<string>();

  /** The route's queue counts, read in the background when stale; the last reading meanwhile. */
  function depthOf(route: string, now: number): Depth | undefined {
    const known = depths.get(route);
    const s = store();
    if (s && (!known || now - known.atMs >= DEPTH_TTL_MS) && !reading.has(route)) {
      reading.add(route);
      const { jsm, names } = s.context;
      jsm.consumers
        .info(names.stream, names.consumer(route))
        .then((info) => depths.set(route, { pending: info.num_pending, inFlight: info.num_ack_pending, atMs: Date.now() }))
        .catch(() => depths.delete(route))
        .finally(() => reading.delete(route));
    }
    return known;
  }

  return {
    offer(route, parse) {
      const now = Date.now();
      let s = samples.get(route);
      if (!s) {
        s = { durations: [], next: 0, lastSampleAtMs: 0 };
        samples.set(route, s);
      }
      if (now - s.lastSampleAtMs < SAMPLE_EVERY_MS) return;
      const body = parse();
      const call = body?.status === JobStatus.Completed ? body.history?.at(-1) : undefined;
      if (!call) return;
      s.lastSampleAtMs = now;
      s.durations[s.next] = call.durationMs;
      s.next = (s.next + 1) % SAMPLES;
    },
    estimate(job, route, now = Date.now()) {
      const durations = samples.get(job.route)?.durations;
      if (!durations || durations.length === 0) return undefined;
      const typicalMs = median(durations);
      if (job.status === JobStatus.Running) {
        const eta = Date.parse(job.updatedAt) + typicalMs;
        return eta > now ? eta : undefined;
      }
      if (job.status !== JobStatus.Queued) return undefined;
      const depth = depthOf(job.route, now);
      if (!depth) return undefined;
      // Everything queued or running on the route goes first, `concurrency` calls at a time (an
      // upper bound for an old job, which newer ones do not delay).
      const waves = Math.max(1, Math.ceil((depth.pending + depth.inFlight) / Math.max(1, route.concurrency)));
      return now + waves * typicalMs;
    },
  };
}
