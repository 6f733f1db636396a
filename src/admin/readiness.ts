/**
 * Readiness: whether this process should get traffic. A list of named checks, run together, the
 * report cached for a moment so that probes from several sources (kubelet, a load balancer, an
 * operator's curl) do not multiply requests to NATS. Once `stop()` is called (shutdown began) the
 * answer is "not ready" at once, without asking anything: Kubernetes then takes the pod out of
 * its Service's endpoints while the proxy finishes the requests in flight.
 */

export interface ReadinessCheck {
  /** Short, stable: `config`, `nats`, `jetstream`. */
  readonly name: string;
  /** Resolves when fine; throws (or rejects) with an Error whose message says what is wrong. */
  run(): void | Promise<void>;
}

export interface ReadinessReport {
  readonly ready: boolean;
  /** Each check's result: `ok` or what is wrong. */
  readonly checks: Readonly<Record<string, string>>;
  /** Names of the failing checks, in the order they were given. */
  readonly failed: readonly string[];
}

export interface Readiness {
  check(): Promise<ReadinessReport>;
  /** Shutdown began: not ready from now on. */
  stop(): void;
}

export interface ReadinessOptions {
  checks: readonly ReadinessCheck[];
  /** How long one report answers probes; default 1 s. */
  cacheMs?: number;
}

const STOPPED: ReadinessReport = Object.freeze({
  ready: false,
  checks: Object.freeze({ shutdown: "shutting down" }),
  failed: Object.freeze(["shutdown"]),
});

export function createReadiness(options: ReadinessOptions): Readiness {
  const cacheMs = options.cacheMs ?? 1_000;
  let stopped = false;
  let last: { atMs: number; report: Promise<ReadinessReport> } | undefined;

  async function runChecks(): Promise<ReadinessReport> {
    const results = await Promise.all(
      options.checks.map(async (c): Promise<[string, string]> => {
        try {
          await c.run();
          return [c.name, "ok"];
        } catch (err) {
          return [c.name, err instanceof Error ? err.message : String(err)];
        }
      }),
    );
    const failed = results.filter(([, result]) => result !== "ok").map(([name]) => name);
    return { ready: failed.length === 0, checks: Object.fromEntries(results), failed };
  }

  return {
    check() {
      if (stopped) return Promise.resolve(STOPPED);
      const now = Date.now();
      // A report still being computed is shared too: a slow NATS never gets more than one probe at a time.
      if (last === undefined || now - last.atMs >= cacheMs) last = { atMs: now, report: runChecks() };
      return last.report;
    },
    stop() {
      stopped = true;
    },
  };
}
