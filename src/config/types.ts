/**
 * The resolved configuration: every default applied, every duration in milliseconds, deeply frozen.
 * The YAML file's own shape (strings like `10m`, optional keys) lives in `schema.ts`.
 */

/** How long a worker waits before the next attempt: `initialMs`, then ×`factor` per attempt, capped at `maxMs`. */
export interface BackoffConfig {
  readonly initialMs: number;
  readonly maxMs: number;
  /** >= 1; 1 = a constant delay. */
  readonly factor: number;
  /** When true, each delay is drawn at random from its upper half, so failed jobs do not retry in lockstep. */
  readonly jitter: boolean;
}

/** One asynchronous route: requests it matches get a 202 and a status URL instead of waiting. */
export interface RouteConfig {
  /** Unique name, `^[A-Za-z0-9_-]{1,64}$`; used in NATS subjects and consumer names. */
  readonly name: string;
  /** Upper-case method names; undefined = every method. */
  readonly methods: readonly string[] | undefined;
  /** Exact path (`/reports`) or glob (`/reports/*`: one segment; `/reports/**`: any depth, including none). */
  readonly path: string;
  /** Milliseconds one backend call (one attempt) may take before it is abandoned. */
  readonly timeoutMs: number;
  /** Milliseconds a finished job and its stored response are kept (at least 1000). */
  readonly ttlMs: number;
  /** Backend calls made at most for one job, the first included (1..100). */
  readonly attempts: number;
  /** Backend calls in flight at most for this route, across all workers (1..10000). */
  readonly concurrency: number;
  /** Whole seconds, >= 1. Sent as `Retry-After` to clients polling a pending job. */
  readonly retryAfterS: number;
  /** Delay between attempts. */
  readonly backoff: BackoffConfig;
  /**
   * Backend statuses retried like a timeout or connection error (sorted, unique); any other answer is the
   * result. A `Retry-After` on a retried 429 or 503 is honoured (capped at `backoff.maxMs`).
   */
  readonly retryOn: readonly number[];
  /** Largest request body accepted, in bytes; larger requests get 413 before anything is queued. */
  readonly maxBodyBytes: number;
  /** Largest backend response stored, in bytes; a larger one fails the job (RESPONSE_TOO_LARGE). */
  readonly maxResponseBytes: number;
}

export interface Config {
  /** Address the proxy listens on; port 0 picks a free port. */
  readonly listen: {
    /** Interface to bind, e.g. `0.0.0.0` or `::` (IPv6 brackets removed). */
    readonly host: string;
    /** TCP port, 0..65535. */
    readonly port: number;
  };
  /** Base URL of the slow backend, absolute http(s), no query or fragment, no trailing slash. */
  readonly upstream: string;
  readonly nats: {
    /** NATS server URLs, at least one; `NATS_URL` (comma-separated) replaces the file's list. */
    readonly servers: readonly string[];
    /** Prefix of every JetStream stream, consumer and bucket name, `^[A-Za-z0-9_-]{1,32}$`. */
    readonly stream: string;
    /** Milliseconds JetStream waits for a worker's ack (or heartbeat) before redelivering the job. */
    readonly ackWaitMs: number;
    /** Copies of the stream and buckets kept by a NATS cluster (1..5; 3 survives one node's loss). */
    readonly replicas: number;
  };
  /** The admin HTTP server: /healthz, /readyz, /metrics. */
  readonly admin: {
    readonly listen: { readonly host: string; readonly port: number };
  };
  /** Milliseconds a stopping process lets accepts and backend calls in flight finish before handing them back. */
  readonly shutdownTimeoutMs: number;
  readonly jobs: {
    /** URL path of the jobs endpoints, starting with `/`, no trailing slash; a job's status URL is `<path>/<id>`. */
    readonly path: string;
  };
  readonly log: {
    /** Lower-case header names redacted in logs, in addition to authorization, cookie and set-cookie. */
    readonly redactHeaders: readonly string[];
  };
  /** Route settings used where a route does not set its own. */
  readonly defaults: Omit<RouteConfig, "name" | "methods" | "path">;
  /** Asynchronous routes in file order; the first that matches a request wins. */
  readonly routes: readonly RouteConfig[];
}
