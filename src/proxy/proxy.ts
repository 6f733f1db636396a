/**
 * The proxy side of a slowlane process: the HTTP server with its three handlers (jobs endpoints,
 * accept, passthrough), listening, a backend URL that a reload can change, and the drain on close.
 */
import { once } from "node:events";
import type { Config } from "../config/index.js";
import type { Logger } from "../log.js";
import type { JobStore } from "../jobs/store.js";
import type { Tracing } from "../tracing/index.js";
import { toHttpUrl } from "../shared/address.js";
import { createAcceptHandler } from "./accept.js";
import { createJobsHandler } from "./job-endpoints.js";
import { createPassthrough } from "./passthrough.js";
import type { Passthrough } from "./passthrough.js";
import { createResultCache } from "./result-cache.js";
import type { ResultCacheObserver } from "./result-cache.js";
import { createHttpServer } from "./server.js";
import type { HttpHandlers, HttpObserver, ServerLimits } from "./server.js";

export interface ProxyOptions {
  /** The config in force (read per request: a reload swaps routes at once). */
  config: () => Config;
  log: Logger;
  /** The store while NATS is connected and set up. */
  store: () => JobStore | undefined;
  observers: { http: HttpObserver; resultCache: ResultCacheObserver };
  serverLimits?: ServerLimits;
  /** Spans for accepts and passthrough requests; default off. */
  tracing?: Tracing;
}

export interface Proxy {
  /** `http://host:port` it listens on. */
  readonly url: string;
  /** Points passthrough at a new backend; requests (and WebSockets) in flight finish on the old one. */
  setBackendUrl(url: string): void;
  /** Stops accepting, finishes requests in flight for up to `drainMs`, then closes what is left. */
  close(drainMs: number): Promise<void>;
}

/** Starts the proxy and resolves once it listens; a port in use rejects. */
export async function startProxy(options: ProxyOptions): Promise<Proxy> {
  const { log, store, tracing } = options;
  const config = options.config();
  const handlers: HttpHandlers = {
    accept: createAcceptHandler({ config, log, store, tracing }),
    jobs: createJobsHandler({ config: options.config, log, cache: createResultCache({ observer: options.observers.resultCache }), store }),
    passthrough: createPassthrough({ upstream: config.upstream, log, tracing }),
    observer: options.observers.http,
  };
  const retired: Passthrough[] = [];
  const server = createHttpServer(options.config, handlers, log, options.serverLimits);
  server.listen(config.listen.port, config.listen.host);
  await once(server, "listening");
  const url = toHttpUrl(server);
  log.info({ url, upstream: config.upstream, routes: config.routes.map((r) => r.name) }, "proxy listening");
  return {
    url,
    setBackendUrl(backendUrl) {
      retired.push(handlers.passthrough);
      handlers.passthrough = createPassthrough({ upstream: backendUrl, log, tracing });
    },
    async close(drainMs) {
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
    },
  };
}
