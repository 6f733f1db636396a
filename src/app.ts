/**
 * The composition root: builds the proxy and/or the forwarder from a Config. Nothing listens or
 * connects on import; `startSlowlane` does, and `close()` undoes it in order (stop accepting,
 * drain the workers, then close NATS).
 */
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { createReadiness } from "./admin/readiness.js";
import { createAdminServer } from "./admin/server.js";
import type { AdminServer } from "./admin/server.js";
import type { Config } from "./config/index.js";
import type { ConfigChanges } from "./config/diff.js";
import { createConfigReloader } from "./config/reload.js";
import { createConfigWatcher } from "./config/watch.js";
import { createAcceptHandler } from "./proxy/accept.js";
import { createJobsHandler } from "./proxy/job-endpoints.js";
import { createPassthrough } from "./proxy/passthrough.js";
import type { Passthrough } from "./proxy/passthrough.js";
import { createHttpServer } from "./proxy/server.js";
import type { HttpHandlers, ServerLimits } from "./proxy/server.js";
import type { Logger } from "./log.js";
import { createMetrics } from "./admin/metrics.js";
import { createNatsClient } from "./nats/connection.js";
import { checkJetStream, readQueueDepths } from "./nats/health.js";
import { provision } from "./nats/provision.js";
import type { JetStreamContext } from "./nats/provision.js";
import { createJobStore } from "./jobs/store.js";
import type { JobStore } from "./jobs/store.js";
import { createResultCache } from "./proxy/result-cache.js";
import { createForwarder } from "./worker/forwarder.js";
import type { Forwarder } from "./worker/forwarder.js";

export const Roles = ["run", "proxy", "worker"] as const;
export type Role = (typeof Roles)[number];

export interface SlowlaneOptions {
  config: Config;
  /** `run` = proxy and forwarder in one process. */
  role: Role;
  log: Logger;
  /** Pause between attempts to reach NATS at start; default 2 s. */
  natsRetryDelayMs?: number;
  /** Node HTTP server limits of the proxy; default `SERVER_LIMITS` (tests pass short timeouts). */
  serverLimits?: ServerLimits;
  /** How long `close()` lets running backend calls finish; default `config.shutdownTimeoutMs`. */
  drainMs?: number;
  /** The file `config` was read from: `reload()` reads it again. */
  configFile?: string;
  /** Reload when `configFile` changes; default true when `configFile` is given. */
  watchConfig?: boolean;
}

export interface Slowlane {
  /** `http://host:port` of the proxy; `undefined` for a worker. */
  readonly url: string | undefined;
  /** Resolves once NATS is reached, JetStream is set up and (workers) consumers are running. */
  readonly ready: Promise<void>;
  /** `http://host:port` of the admin server (/healthz, /readyz, /metrics). */
  readonly adminUrl: string;
  /**
   * Reads `configFile` again and puts it in force without dropping connections, requests or jobs; true when
   * its config is in force afterwards, false when it was refused (invalid, or NATS refused a change).
   */
  reload(): Promise<boolean>;
  close(): Promise<void>;
}

export async function startSlowlane(options: SlowlaneOptions): Promise<Slowlane> {
  const { config, role, log } = options;
  const hasProxy = role !== "worker";
  const hasWorker = role !== "proxy";
  /** The config in force: the one given, then each reload's. Read it at use, never keep a copy. */
  let current = config;

  let backend: { context: JetStreamContext; store: JobStore } | undefined;
  let forwarder: Forwarder | undefined;
  /** The config the forwarder last applied; behind `current` after a reload while NATS was away. */
  let forwarderConfig: Config | undefined;
  let closing = false;

  // Provisioning, starting the forwarder and applying a reload each read `current` and change what
  // JetStream holds: one at a time, so a reconnect's set-up never undoes a reload's.
  let serial: Promise<unknown> = Promise.resolve();
  function exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = serial.then(task);
    serial = run.catch(() => undefined);
    return run;
  }

  const metrics = createMetrics({
    natsConnected: () => nats.isConnected(),
    queueDepths: () => {
      const context = connected()?.context;
      return context && readQueueDepths(context);
    },
  });
  const nats = createNatsClient({
    servers: config.nats.servers,
    name: `slowlane-${role}`,
    log,
    ...(options.natsRetryDelayMs === undefined ? {} : { retryDelayMs: options.natsRetryDelayMs }),
    onConnect: (nc) =>
      exclusive(async () => {
        const wanted = current;
        const context = await provision(nc, wanted, { consumers: hasWorker });
        backend = { context, store: createJobStore(context) };
        if (forwarder && forwarderConfig !== wanted) {
          await forwarder.reconfigure(wanted);
          forwarderConfig = wanted;
        }
        if (forwarder && context.createdConsumers.length > 0) await forwarder.resubscribe(context.createdConsumers);
      }),
  });
  const connected = () => (nats.isConnected() ? backend : undefined);

  const ready = nats.ready.then(() =>
    exclusive(async () => {
      if (hasWorker && backend && !closing) {
        const wanted = current;
        forwarder = await createForwarder({
          config: wanted,
          context: backend.context,
          store: backend.store,
          log,
          observer: metrics.forwarder,
        });
        forwarderConfig = wanted;
      }
    }),
  );
  ready.catch(() => undefined);

  const readiness = createReadiness({
    checks: [
      // Always ok once started: a reload that is refused keeps the last good config in force.
      { name: "config", run: () => undefined },
      {
        name: "nats",
        run() {
          if (!nats.isConnected()) throw new Error(`not connected to NATS at ${config.nats.servers.join(", ")}`);
        },
      },
      {
        name: "jetstream",
        async run() {
          const context = connected()?.context;
          if (!context) throw new Error("not set up (NATS is not connected)");
          await checkJetStream(context);
        },
      },
    ],
  });
  let admin: AdminServer;
  try {
    admin = await createAdminServer({ listen: config.admin.listen, log, metrics, readiness });
  } catch (err) {
    await nats.close();
    throw err;
  }

  /** Set by the proxy: points passthrough at a new upstream. */
  let setUpstream: ((upstream: string) => void) | undefined;

  let url: string | undefined;
  let closeProxy = async (_drainMs: number): Promise<void> => undefined;
  if (hasProxy) {
    const handlers: HttpHandlers = {
      accept: createAcceptHandler({ config, log, backend: connected }),
      jobs: createJobsHandler({
        config: () => current,
        log,
        cache: createResultCache({ observer: metrics.resultCache }),
        backend: connected,
      }),
      passthrough: createPassthrough({ upstream: config.upstream, log }),
      observer: metrics.http,
    };
    // A replaced passthrough keeps serving the requests (and WebSockets) it has until slowlane stops.
    const retired: Passthrough[] = [];
    setUpstream = (upstream) => {
      retired.push(handlers.passthrough);
      handlers.passthrough = createPassthrough({ upstream, log });
    };
    const server = createHttpServer(() => current, handlers, log, options.serverLimits);
    server.listen(config.listen.port, config.listen.host);
    await once(server, "listening").catch(async (err: unknown) => {
      await Promise.all([admin.close(), nats.close()]);
      throw err;
    });
    const address = server.address() as AddressInfo;
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    url = `http://${host}:${address.port}`;
    log.info({ url, upstream: config.upstream, routes: config.routes.map((r) => r.name) }, "proxy listening");
    closeProxy = async (drainMs: number) => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // No new connections from here. A keep-alive connection goes as soon as its request in flight
      // is answered (Node keeps it open otherwise, up to keepAliveTimeout); past the drain time, all go.
      server.closeIdleConnections();
      const sweep = setInterval(() => server.closeIdleConnections(), 50);
      const deadline = setTimeout(() => server.closeAllConnections(), drainMs);
      await closed;
      clearInterval(sweep);
      clearTimeout(deadline);
      for (const passthrough of [handlers.passthrough, ...retired]) passthrough.close();
    };
  }

  /** Puts a reloaded config in force: consumers first, then the workers, then the proxy's routes. */
  const applyConfig = (next: Config, changes: ConfigChanges): Promise<void> =>
    exclusive(async () => {
      const nc = nats.connection;
      if (nc && nats.isConnected()) {
        // New routes get their consumers before anything is accepted for them or pulled from them.
        await provision(nc, next, { consumers: hasWorker });
        if (forwarder) {
          await forwarder.reconfigure(next);
          forwarderConfig = next;
        }
      }
      // Else the next (re)connect provisions and reconfigures the forwarder with `current`.
      if (changes.keys.includes("upstream")) setUpstream?.(next.upstream);
      current = next;
    });
  const configFile = options.configFile;
  const reloader =
    configFile === undefined
      ? undefined
      : createConfigReloader({
          file: configFile,
          log,
          current: () => current,
          apply: applyConfig,
          onResult: (result) => metrics.configReloaded(result),
        });
  const watcher =
    reloader !== undefined && configFile !== undefined && options.watchConfig !== false
      ? createConfigWatcher({ file: configFile, log, onChange: () => reloader.reload() })
      : undefined;

  return {
    url,
    ready,
    adminUrl: admin.url,
    async reload() {
      if (reloader === undefined) {
        log.warn("config reload asked, but the config was not read from a file");
        return false;
      }
      return reloader.reload();
    },
    async close() {
      closing = true;
      // Not ready from now on, so that a load balancer stops sending while the proxy finishes.
      readiness.stop();
      watcher?.close();
      // One drain time for both: the proxy finishes its accepts while the workers finish their calls.
      const drainMs = options.drainMs ?? current.shutdownTimeoutMs;
      await Promise.all([closeProxy(drainMs), forwarder?.close(drainMs)]);
      await nats.close();
      await admin.close();
    },
  };
}
