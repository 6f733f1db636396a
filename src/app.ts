/**
 * The composition root: builds the proxy and/or the forwarder from a Config. Nothing listens or
 * connects on import; `startSlowlane` does, and `close()` undoes it in order (stop accepting,
 * drain the workers, then close NATS).
 */
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import type { Config } from "./config/index.js";
import { createAcceptHandler } from "./http/accept.js";
import { createJobsHandler } from "./http/jobs.js";
import { createPassthrough } from "./http/passthrough.js";
import { createHttpServer } from "./http/server.js";
import type { Logger } from "./log.js";
import { createNatsClient } from "./queue/connection.js";
import { provision } from "./queue/provision.js";
import type { JetStreamContext } from "./queue/provision.js";
import { createJobStore } from "./store/job-store.js";
import type { JobStore } from "./store/job-store.js";
import { createResultCache } from "./store/result-cache.js";
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
  /** How long `close()` lets running backend calls finish; default `config.shutdownTimeoutMs`. */
  drainMs?: number;
}

export interface Slowlane {
  /** `http://host:port` of the proxy; `undefined` for a worker. */
  readonly url: string | undefined;
  /** Resolves once NATS is reached, JetStream is set up and (workers) consumers are running. */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

export async function startSlowlane(options: SlowlaneOptions): Promise<Slowlane> {
  const { config, role, log } = options;
  const hasProxy = role !== "worker";
  const hasWorker = role !== "proxy";

  let backend: { context: JetStreamContext; store: JobStore } | undefined;
  let forwarder: Forwarder | undefined;
  let closing = false;
  const nats = createNatsClient({
    servers: config.nats.servers,
    name: `slowlane-${role}`,
    log,
    ...(options.natsRetryDelayMs === undefined ? {} : { retryDelayMs: options.natsRetryDelayMs }),
    async onConnect(nc) {
      const context = await provision(nc, config, { consumers: hasWorker });
      backend = { context, store: createJobStore(context) };
      if (forwarder && context.createdConsumers.length > 0) await forwarder.resubscribe(context.createdConsumers);
    },
  });
  const connected = () => (nats.isConnected() ? backend : undefined);

  const ready = nats.ready.then(async () => {
    if (hasWorker && backend && !closing) {
      forwarder = await createForwarder({ config, context: backend.context, store: backend.store, log });
    }
  });
  ready.catch(() => undefined);

  let url: string | undefined;
  let closeProxy = async (): Promise<void> => undefined;
  if (hasProxy) {
    const passthrough = createPassthrough({ upstream: config.upstream, log });
    const server = createHttpServer(
      config,
      {
        accept: createAcceptHandler({ config, log, context: () => connected()?.context }),
        jobs: createJobsHandler({ config: () => config, log, cache: createResultCache(), backend: connected }),
        passthrough,
      },
      log,
    );
    server.listen(config.listen.port, config.listen.host);
    await once(server, "listening");
    const address = server.address() as AddressInfo;
    const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
    url = `http://${host}:${address.port}`;
    log.info({ url, upstream: config.upstream, routes: config.routes.map((r) => r.name) }, "proxy listening");
    closeProxy = async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await closed;
      passthrough.close();
    };
  }

  return {
    url,
    ready,
    async close() {
      closing = true;
      await closeProxy();
      await forwarder?.close(options.drainMs ?? config.shutdownTimeoutMs);
      await nats.close();
    },
  };
}
