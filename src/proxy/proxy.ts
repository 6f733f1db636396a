/**
 * The proxy side of a slowlane process: the HTTP server with its three handlers (jobs endpoints,
 * accept, passthrough), listening, a backend URL that a reload can change, and the drain on close.
 */
import { once } from "node:events";
import type { Server } from "node:http";
import type { Config } from "../config/index.js";
import type { Logger } from "../log.js";
import type { JobStore } from "../jobs/store.js";
import type { ServerKeys } from "../security/server-keys.js";
import type { Tracing } from "../tracing/index.js";
import { toHttpUrl } from "../shared/address.js";
import { createAcceptHandler } from "./accept.js";
import { createAcceptCompletion } from "./accept-completion.js";
import { createCompletionEstimator } from "./estimate.js";
import { createByteBudget, withBodyBudget } from "./body-budget.js";
import { createJobsHandler } from "./job-endpoints.js";
import { createUnknownIds } from "./job-status.js";
import { createJobWatch } from "./job-watch.js";
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
  /** The server keys: from the key file, or once the shared key is read from NATS. */
  keys: () => ServerKeys | undefined;
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

/** What one accept may hold of a body before NATS has told its max_payload (nats-server's default). */
const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;

/**
 * `server.maxConnections` on the Node server (0: no limit): a connection past it is closed at
 * once, before a byte is read. Read again at each connection, so a reload applies to the next.
 */
function limitConnections(server: Server, config: () => Config, log: Logger): void {
  const apply = () => {
    const max = config().server.maxConnections;
    // No limit is Infinity: Node versions differ on what a maxConnections of 0 means.
    server.maxConnections = max > 0 ? max : Infinity;
  };
  apply();
  server.on("connection", apply);
  server.on("drop", (data?: { remoteAddress?: string }) => log.debug({ remote: data?.remoteAddress }, "connection refused: server.maxConnections reached"));
}

/** Starts the proxy and resolves once it listens; a port in use rejects. */
export async function startProxy(options: ProxyOptions): Promise<Proxy> {
  const { log, store, keys, tracing } = options;
  const config = options.config();
  const unknownIds = createUnknownIds();
  const cache = createResultCache({ observer: options.observers.resultCache });
  // One watch on every job's transitions, shared by waiting accepts and the status URL's streams.
  const estimator = createCompletionEstimator(store);
  const watch = createJobWatch({ store, log, onAnyEvent: (route, parse) => estimator.offer(route, parse) });
  const jobs = createJobsHandler({ config: options.config, log, cache, store, keys, unknownIds, watch, estimator });
  const budget = createByteBudget(() => options.config().server.maxInflightBodyBytes);
  const maxHeldBytes = () => store()?.context.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  const completion = createAcceptCompletion({ watch, config: options.config, store, cache, log });
  const handlers: HttpHandlers = {
    accept: withBodyBudget(createAcceptHandler({ config, log, store, keys, unknownIds, completion, tracing }), { budget, maxHeldBytes, log }),
    jobs,
    jobsUpgrade: jobs.upgrade,
    passthrough: createPassthrough({ upstream: config.upstream, log, tracing }),
    observer: options.observers.http,
  };
  const retired: Passthrough[] = [];
  const server = createHttpServer(options.config, handlers, log, options.serverLimits);
  limitConnections(server, options.config, log);
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
      // Waiting requests are answered now (streams end, sockets close, long-polls and waiting
      // accepts get their answer), so their connections can go with the idle ones.
      jobs.close();
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
