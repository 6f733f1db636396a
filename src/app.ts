/**
 * The composition root: builds a slowlane process (proxy, workers, or both) from a Config. Nothing
 * listens or connects on import; `startSlowlane` does (after starting the embedded nats-server, if
 * the config asks for one), and `close()` undoes it in order: not ready, stop accepting and drain
 * the workers together, then NATS, then the embedded nats-server, then the admin server.
 */
import { createReadiness } from "./admin/readiness.js";
import type { Readiness } from "./admin/readiness.js";
import { createAdminServer } from "./admin/server.js";
import type { AdminServer } from "./admin/server.js";
import { createMetrics } from "./admin/metrics.js";
import type { Metrics } from "./admin/metrics.js";
import type { Config } from "./config/index.js";
import type { ConfigChanges } from "./config/diff.js";
import { createConfigReloader } from "./config/reload.js";
import type { ConfigReloader } from "./config/reload.js";
import { createConfigWatcher } from "./config/watch.js";
import type { Logger } from "./log.js";
import { createCompletionPublisher } from "./callbacks/index.js";
import { createJobStore } from "./jobs/store.js";
import type { JobStore } from "./jobs/store.js";
import type { TransitionObserver } from "./jobs/transitions.js";
import type { JetStreamContext } from "./nats/context.js";
import { openNatsEndpoint } from "./nats/endpoint.js";
import type { NatsEndpoint } from "./nats/endpoint.js";
import { checkJetStream, readQueueDepths } from "./nats/health.js";
import { toJetStreamNames } from "./nats/names.js";
import { createNatsSession } from "./nats/session.js";
import type { NatsSession } from "./nats/session.js";
import { startProxy } from "./proxy/proxy.js";
import type { Proxy } from "./proxy/proxy.js";
import type { ServerLimits } from "./proxy/server.js";
import { describeStorage, keyFileOf, loadKeyFileSecrets, sharedKeySecrets } from "./security/key-source.js";
import type { ServerSecrets } from "./security/key-source.js";
import { loadOrCreateSharedKey } from "./security/server-keys.js";
import { createCallbackDelivery } from "./worker/callback-delivery.js";
import type { CallbackDeliverer } from "./worker/callback-delivery.js";
import { DISABLED_TRACING } from "./tracing/index.js";
import type { Tracing } from "./tracing/index.js";
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
  /** Where `SLOWLANE_KEY_FILE`, the NATS_* credentials and TLS variables (and NATS_SERVER_BIN) are read; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Spans for requests and jobs (`startTracing`); default off. `close()` flushes it, last. */
  tracing?: Tracing;
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

/** The parts of a running process that change over its life, in one place. */
class Runtime {
  /** The config in force: the one given, then each reload's. Read it at use, never keep a copy. */
  current: Config;
  forwarder: Forwarder | undefined;
  /** Workers deliver callbacks too. */
  callbacks: CallbackDeliverer | undefined;
  /** The config the forwarder last applied; behind `current` after a reload while NATS was away. */
  forwarderConfig: Config | undefined;
  closing = false;
  /**
   * The server keys, and the sealer when a key file is configured: read from the file at start, or
   * (no file) the shared key read from NATS at the first set-up. Fixed for the process's life.
   */
  secrets: ServerSecrets | undefined;
  private readonly stores = new WeakMap<JetStreamContext, JobStore>();

  constructor(
    config: Config,
    secrets: ServerSecrets | undefined,
    /** Told of every transition: completion events on NATS, callback deliveries queued. */
    private readonly transitions: TransitionObserver,
  ) {
    this.current = config;
    this.secrets = secrets;
  }

  /** The store over a JetStream context, made once per (re)connect. */
  storeOf(context: JetStreamContext): JobStore {
    let store = this.stores.get(context);
    if (!store) {
      store = createJobStore(context, { sealer: this.secrets?.sealer, observer: this.transitions });
      this.stores.set(context, store);
    }
    return store;
  }

  /** After each set-up: the shared key once (without a key file), then the forwarder follows the config and any consumer re-created. */
  async afterSetUp(context: JetStreamContext, config: Config, log: Logger): Promise<void> {
    if (!this.secrets && context.keyBucket) {
      const keys = await loadOrCreateSharedKey(context.keyBucket);
      this.secrets = sharedKeySecrets(keys);
      log.info({ bucket: context.names.keysBucket, key: keys.primary.id }, "server key read from NATS (shared by every replica)");
    }
    if (!this.forwarder) return;
    if (this.forwarderConfig !== config) {
      await this.forwarder.reconfigure(config);
      this.forwarderConfig = config;
    }
    if (context.createdConsumers.length > 0) await this.forwarder.resubscribe(context.createdConsumers);
  }
}

function createProcessReadiness(endpoint: NatsEndpoint, nats: NatsSession): Readiness {
  const servers = endpoint.servers.join(", ");
  return createReadiness({
    checks: [
      // A reload that is refused keeps the last good config in force: the process stays ready.
      { name: "config", run: () => undefined },
      {
        name: "nats",
        run() {
          if (!nats.isConnected()) throw new Error(`not connected to NATS at ${servers}`);
        },
      },
      {
        name: "jetstream",
        async run() {
          const context = nats.context();
          if (!context) throw new Error("not set up (NATS is not connected)");
          await checkJetStream(context);
        },
      },
    ],
  });
}

/** Builds the reloader and the file watcher, when the config came from a file. */
function createReloading(options: SlowlaneOptions, runtime: Runtime, metrics: Metrics, apply: (next: Config, changes: ConfigChanges) => Promise<void>) {
  const file = options.configFile;
  if (file === undefined) return { reloader: undefined, watcher: undefined };
  const reloader: ConfigReloader = createConfigReloader({
    file,
    log: options.log,
    current: () => runtime.current,
    apply,
    onResult: (result) => metrics.configReloaded(result),
  });
  const watcher = options.watchConfig === false ? undefined : createConfigWatcher({ file, log: options.log, onChange: () => reloader.reload() });
  return { reloader, watcher };
}

/** The key file's secrets, or `undefined` without one (the shared key comes from NATS later); logs the storage line. */
function loadSecrets(options: SlowlaneOptions): ServerSecrets | undefined {
  const file = keyFileOf(options.config, options.env);
  // A bad key file stops the start (ConfigError naming each bad line), like a bad config.
  const secrets = file === undefined ? undefined : loadKeyFileSecrets(file);
  const bucket = toJetStreamNames(options.config.nats.stream).keysBucket;
  options.log.info({ encrypted: secrets !== undefined, keyFile: file }, describeStorage(file, secrets?.keys, bucket));
  return secrets;
}

/** The NATS session of this process, on the endpoint's servers, provisioning for the config in force. */
function createProcessNats(options: SlowlaneOptions, runtime: Runtime, endpoint: NatsEndpoint): NatsSession {
  return createNatsSession({
    config: () => runtime.current,
    name: `slowlane-${options.role}`,
    consumers: options.role !== "proxy",
    log: options.log,
    servers: endpoint.servers,
    auth: endpoint.auth,
    ...(options.natsRetryDelayMs === undefined ? {} : { retryDelayMs: options.natsRetryDelayMs }),
    onSetUp: (context, config) => runtime.afterSetUp(context, config, options.log),
  });
}

/** Once NATS is set up, a worker process starts pulling jobs and callback deliveries. */
async function startWorkers(role: Role, nats: NatsSession, runtime: Runtime, log: Logger, metrics: Metrics, tracing: Tracing): Promise<void> {
  const context = nats.context();
  if (role === "proxy" || !context || runtime.closing) return;
  const config = runtime.current;
  const store = runtime.storeOf(context);
  runtime.forwarder = await createForwarder({ config, store, log, observer: metrics.forwarder, tracing });
  runtime.forwarderConfig = config;
  runtime.callbacks = await createCallbackDelivery({ config: () => runtime.current, store, log, observer: metrics.callbacks });
}

export async function startSlowlane(options: SlowlaneOptions): Promise<Slowlane> {
  const { role, log } = options;
  const tracing = options.tracing ?? DISABLED_TRACING;
  const runtime = new Runtime(options.config, loadSecrets(options), createCompletionPublisher({ jobsPath: options.config.jobs.path, log }));
  const endpoint = await openNatsEndpoint(options.config, options.env ?? process.env, log);
  const nats = createProcessNats(options, runtime, endpoint);
  const store = (): JobStore | undefined => {
    const context = nats.context();
    return context && runtime.storeOf(context);
  };
  const metrics = createMetrics({
    natsConnected: () => nats.isConnected(),
    queueDepths: () => {
      const context = nats.context();
      return context && readQueueDepths(context);
    },
  });
  const readiness = createProcessReadiness(endpoint, nats);

  const ready = nats.ready.then(() => nats.exclusive(() => startWorkers(role, nats, runtime, log, metrics, tracing)));
  ready.catch(() => undefined);

  let admin: AdminServer | undefined;
  let proxy: Proxy | undefined;
  try {
    const { listen, listenExplicit } = options.config.admin;
    admin = await createAdminServer({ listen, listenExplicit, log, metrics, readiness });
    if (role !== "worker") {
      const observers = { http: metrics.http, resultCache: metrics.resultCache };
      const serverLimits = options.serverLimits === undefined ? {} : { serverLimits: options.serverLimits };
      const keys = () => runtime.secrets?.keys;
      proxy = await startProxy({ config: () => runtime.current, log, store, keys, observers, tracing, ...serverLimits });
    }
  } catch (err) {
    await Promise.all([admin?.close(), nats.close().then(() => endpoint.close())]);
    throw err;
  }

  /** Puts a reloaded config in force: consumers first (in `provision`), then the workers, then the proxy's routes. */
  const apply = (next: Config, changes: ConfigChanges): Promise<void> =>
    nats.exclusive(async () => {
      // Running calls heartbeat at a lowered AckWait before the consumers get it.
      await runtime.forwarder?.prepare(next);
      // New routes get their consumers before anything is accepted for them or pulled from them.
      // Not connected: the next (re)connect provisions and reconfigures the forwarder with `current`.
      await nats.provision(next);
      if (changes.keys.includes("upstream")) proxy?.setBackendUrl(next.upstream);
      runtime.current = next;
    });
  const { reloader, watcher } = createReloading(options, runtime, metrics, apply);
  const adminServer = admin;

  return {
    url: proxy?.url,
    ready,
    adminUrl: adminServer.url,
    async reload() {
      if (reloader === undefined) {
        log.warn("config reload asked, but the config was not read from a file");
        return false;
      }
      return reloader.reload();
    },
    async close() {
      runtime.closing = true;
      // Not ready from now on, so that a load balancer stops sending while the proxy finishes.
      readiness.stop();
      watcher?.close();
      // One drain time for both: the proxy finishes its accepts while the workers finish their calls.
      const drainMs = options.drainMs ?? runtime.current.shutdownTimeoutMs;
      await Promise.all([proxy?.close(drainMs), runtime.forwarder?.close(drainMs), runtime.callbacks?.close(drainMs)]);
      await nats.close();
      await endpoint.close();
      await adminServer.close();
      // Last: the spans of everything above (the drain included) are exported.
      await tracing.shutdown();
    },
  };
}
