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
  /**
   * What identifies the caller, for binding a job to it: lower-case request header names
   * (`authorization`, `x-api-key`) or `cookie:<name>`. A status, result or cancel request must present
   * the same values (else 404). Empty: jobs of this route are not bound.
   */
  readonly owner: readonly string[];
  /** Extra headers sent on this route's result answers, as [name, value] pairs (names lower-case). */
  readonly resultHeaders: readonly (readonly [string, string])[];
  /** Milliseconds a job may wait in the queue before its first call; past it the job fails unsent. `undefined`: no limit. */
  readonly deadlineMs: number | undefined;
  /** Milliseconds the accept waits for the job to finish and replays its response; 0 answers 202 at once. */
  readonly waitMs: number;
  /** `always`: every matching request becomes a job; `prefer`: only those sent with `Prefer: respond-async`. */
  readonly async: AsyncMode;
  /** Signed completion callbacks (`X-Callback-Url`); `undefined`: the header is refused. */
  readonly callbacks: CallbacksConfig | undefined;
}

export const AsyncModes = ["always", "prefer"] as const;
export type AsyncMode = (typeof AsyncModes)[number];

export interface CallbacksConfig {
  /** URL patterns a callback URL must match (`*`: one host label or path segment, `:*` any port, `**` any path rest). */
  readonly allow: readonly string[];
  /** File holding the signing secret, `whsec_<base64>` (Standard Webhooks). */
  readonly secretFile: string;
}

/** Files that hold what connecting to NATS needs; secrets never sit in the config itself. */
export interface NatsTlsConfig {
  /** CA certificate file (PEM) that the server's certificate must chain to. */
  readonly ca: string | undefined;
  /** Client certificate file (PEM), for servers that verify clients. */
  readonly cert: string | undefined;
  /** Client key file (PEM). */
  readonly key: string | undefined;
}

export interface NatsAuthConfig {
  /** A `.creds` file (JWT and nkey seed). */
  readonly credsFile: string | undefined;
  /** An nkey seed file. */
  readonly nkeyFile: string | undefined;
  /** User name, with `passwordFile`. */
  readonly user: string | undefined;
  readonly passwordFile: string | undefined;
  /** A file holding a token. */
  readonly tokenFile: string | undefined;
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
    /**
     * NATS server URLs, at least one; `NATS_URL` (comma-separated) replaces the file's list. Empty when
     * {@link embedded} is set: slowlane then starts its own nats-server and connects to it.
     */
    readonly servers: readonly string[];
    /** `nats.servers: embedded`: a private nats-server child process with JetStream under `storeDir`. */
    readonly embedded: { readonly storeDir: string } | undefined;
    readonly tls: NatsTlsConfig | undefined;
    readonly auth: NatsAuthConfig | undefined;
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
    /** False when `admin.listen` is the default: a port in use then falls back to a free one (several processes per host). */
    readonly listenExplicit: boolean;
  };
  /** Limits of the proxy's HTTP server that protect its memory. */
  readonly server: {
    /** Connections the proxy holds at most; more are refused at once. 0: no limit. */
    readonly maxConnections: number;
    /** Request body bytes the proxy holds in memory at once across all accepts; past it, 503 with Retry-After. */
    readonly maxInflightBodyBytes: number;
  };
  readonly security: {
    /** File of base64 32-byte keys, one per line (the first encrypts and signs); `SLOWLANE_KEY_FILE` wins. */
    readonly keyFile: string | undefined;
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
