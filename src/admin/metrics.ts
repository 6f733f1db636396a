/**
 * Prometheus metrics, in a registry of their own (never prom-client's global one, so several
 * slowlanes in one process, as in tests, do not mix). The names are a contract: the Grafana
 * dashboard and the README's table use them. Labels are route names, modes, statuses and
 * outcomes only, never ids or paths, so the number of series stays small.
 *
 * Counters are fed by observers the proxy, the forwarder and the result cache call as they work;
 * the queue gauges and the NATS gauge are read at scrape time.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { HttpObserver, RequestMode } from "../proxy/server.js";
import type { ResultCacheObserver } from "../proxy/result-cache.js";
import type { ForwarderObserver } from "../worker/forwarder.js";
import type { QueueDepth } from "../nats/health.js";

import { ReloadResults } from "../config/reload.js";
import type { ReloadResult } from "../config/reload.js";

export interface MetricsOptions {
  /** Whether NATS is connected and set up; read at each scrape. */
  natsConnected: () => boolean;
  /**
   * Every route consumer's counts, read at scrape time (at most once per `queueCacheMs`);
   * `undefined` while NATS is away. A rejection leaves the queue gauges empty for that scrape.
   */
  queueDepths: () => Promise<readonly QueueDepth[]> | undefined;
  /** How long one reading of the queue counts serves scrapes; default 2 s. */
  queueCacheMs?: number;
}

export interface Metrics {
  /** The `Content-Type` of {@link render}'s text. */
  readonly contentType: string;
  /** Every metric in Prometheus' text format. */
  render(): Promise<string>;
  /** For the proxy's HTTP server. */
  readonly http: HttpObserver;
  /** For the forwarder. */
  readonly forwarder: ForwarderObserver;
  /** For the cache of finished jobs. */
  readonly resultCache: ResultCacheObserver;
  /** Counts one config reload, applied or refused. */
  configReloaded(result: ReloadResult): void;
}

/** Accept answers come in milliseconds (one JetStream round trip); 5 s is the publish timeout. */
const ACCEPT_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Backend calls take seconds to hours. */
const BACKEND_BUCKETS_S = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1_200, 1_800, 3_600, 7_200, 14_400, 43_200, 86_400];

/** The counters and histograms fed by the proxy's and the cache's observers, and the reload counter, in `registry`. */
function createCounters(registry: Registry) {
  const registers = [registry];
  const requests = new Counter({
    name: "slowlane_http_requests_total",
    help: "Requests answered by the proxy, by route (empty for passthrough and jobs), mode and HTTP status.",
    labelNames: ["route", "mode", "status"] as const,
    registers,
  });
  const acceptDuration = new Histogram({
    name: "slowlane_accept_duration_seconds",
    help: "Time from the start of a request on an async route to its answer (202, 503 or 413).",
    labelNames: ["route"] as const,
    buckets: ACCEPT_BUCKETS_S,
    registers,
  });
  const accepted = new Counter({
    name: "slowlane_jobs_accepted_total",
    help: "Jobs persisted in JetStream and answered 202.",
    labelNames: ["route"] as const,
    registers,
  });
  const cacheHits = new Counter({
    name: "slowlane_result_cache_hits_total",
    help: "Status and result requests answered from the in-memory cache of finished jobs.",
    registers,
  });
  const cacheMisses = new Counter({
    name: "slowlane_result_cache_misses_total",
    help: "Status and result requests that had to read NATS.",
    registers,
  });
  const reloads = new Counter({
    name: "slowlane_config_reloads_total",
    help: "Config reloads, by result (success, failure).",
    labelNames: ["result"] as const,
    registers,
  });
  // Both series exist from the start, so a failure shows as a rise from 0 rather than a new series.
  for (const result of ReloadResults) reloads.inc({ result }, 0);
  return { requests, acceptDuration, accepted, cacheHits, cacheMisses, reloads };
}

/** The metrics fed by the forwarder's observer, in `registry`. */
function createWorkerMetrics(registry: Registry) {
  const registers = [registry];
  const finished = new Counter({
    name: "slowlane_jobs_finished_total",
    help: "Jobs a worker in this process brought to a final status (completed, failed, canceled).",
    labelNames: ["route", "status"] as const,
    registers,
  });
  const running = new Gauge({
    name: "slowlane_jobs_running",
    help: "Backend calls running now in this process.",
    labelNames: ["route"] as const,
    registers,
  });
  const backendDuration = new Histogram({
    name: "slowlane_backend_call_duration_seconds",
    help: "Duration of backend calls, by route and status (the HTTP status, or timeout, unreachable, aborted, too_large).",
    labelNames: ["route", "status"] as const,
    buckets: BACKEND_BUCKETS_S,
    registers,
  });
  const attempts = new Counter({
    name: "slowlane_backend_attempts_total",
    help: "Backend calls made, by route and outcome (the HTTP status, or timeout, unreachable, aborted, too_large).",
    labelNames: ["route", "outcome"] as const,
    registers,
  });
  const redeliveries = new Counter({
    name: "slowlane_redeliveries_total",
    help: "Jobs JetStream delivered again (after a failed attempt, a crash or a lost ack).",
    labelNames: ["route"] as const,
    registers,
  });
  const circuitOpen = new Gauge({
    name: "slowlane_route_circuit_open",
    help: "1 while the route is paused in this process because its backend is unreachable (its circuit is open), else 0.",
    labelNames: ["route"] as const,
    registers,
  });
  const resultStoreFailures = new Counter({
    name: "slowlane_result_store_failures_total",
    help: "Writes of a job's result (its body or its completed record) that failed after the backend answered; each is retried.",
    labelNames: ["route"] as const,
    registers,
  });
  return { finished, running, backendDuration, attempts, redeliveries, circuitOpen, resultStoreFailures };
}

/** The gauges read at scrape time: NATS connected, and the queue depths (one reading serves both for `queueCacheMs`). */
function createGauges(registry: Registry, options: MetricsOptions): void {
  const registers = [registry];
  const queueCacheMs = options.queueCacheMs ?? 2_000;
  new Gauge({
    name: "slowlane_nats_connected",
    help: "1 while connected to NATS with JetStream set up, else 0.",
    registers,
    collect() {
      this.set(options.natsConnected() ? 1 : 0);
    },
  });

  // One reading of the consumers serves both queue gauges and every scrape for `queueCacheMs`.
  let depths: { atMs: number; value: Promise<readonly QueueDepth[]> } | undefined;
  function readDepths(): Promise<readonly QueueDepth[]> {
    const now = Date.now();
    if (depths === undefined || now - depths.atMs >= queueCacheMs) {
      const value = (options.queueDepths() ?? Promise.resolve([])).catch(() => []);
      depths = { atMs: now, value };
    }
    return depths.value;
  }
  new Gauge({
    name: "slowlane_queue_pending",
    help: "Jobs waiting for a worker, by route (JetStream consumer num_pending).",
    labelNames: ["route"] as const,
    registers,
    async collect() {
      const list = await readDepths();
      this.reset();
      for (const d of list) this.set({ route: d.route }, d.pending);
    },
  });
  new Gauge({
    name: "slowlane_queue_in_flight",
    help: "Jobs handed to a worker and not yet acked, by route (JetStream consumer num_ack_pending).",
    labelNames: ["route"] as const,
    registers,
    async collect() {
      const list = await readDepths();
      this.reset();
      for (const d of list) this.set({ route: d.route }, d.inFlight);
    },
  });

}

/** The forwarder's observer: running calls, attempts and their durations, finished jobs, circuits, result writes retried. */
function forwarderObserver(metrics: ReturnType<typeof createWorkerMetrics>): ForwarderObserver {
  const { finished, running, backendDuration, attempts, redeliveries, circuitOpen, resultStoreFailures } = metrics;
  return {
    jobStarted(route, _attempt, redelivered) {
      running.inc({ route });
      if (redelivered) redeliveries.inc({ route });
    },
    callFinished(route, outcome, durationMs) {
      running.dec({ route });
      attempts.inc({ route, outcome });
      backendDuration.observe({ route, status: outcome }, durationMs / 1_000);
    },
    jobFinished(route, status) {
      finished.inc({ route, status });
    },
    circuitChanged(route, open) {
      circuitOpen.set({ route }, open ? 1 : 0);
    },
    resultStoreFailed(route) {
      resultStoreFailures.inc({ route });
    },
  };
}

export function createMetrics(options: MetricsOptions): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const { requests, acceptDuration, accepted, cacheHits, cacheMisses, reloads } = createCounters(registry);
  const workerMetrics = createWorkerMetrics(registry);
  createGauges(registry, options);

  // The request counter is on every request's path: keep its children instead of hashing labels each time.
  const requestCounters = new Map<string, Counter.Internal>();
  function requestCounter(route: string, mode: RequestMode, status: number): Counter.Internal {
    const key = `${mode} ${status} ${route}`;
    let child = requestCounters.get(key);
    if (child === undefined) {
      child = requests.labels({ route, mode, status: String(status) });
      requestCounters.set(key, child);
    }
    return child;
  }

  return {
    contentType: registry.contentType,
    render: () => registry.metrics(),
    http: {
      requestFinished(mode, route, status, durationMs) {
        requestCounter(route, mode, status).inc();
        if (mode !== "async") return;
        acceptDuration.observe({ route }, durationMs / 1_000);
        if (status === 202) accepted.inc({ route });
      },
    },
    forwarder: forwarderObserver(workerMetrics),
    resultCache: {
      hit: () => cacheHits.inc(),
      miss: () => cacheMisses.inc(),
    },
    configReloaded(result) {
      reloads.inc({ result });
    },
  };
}
