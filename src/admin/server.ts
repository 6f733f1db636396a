/**
 * The admin server, on its own port (`admin.listen`) so that probes and scrapes never queue
 * behind client traffic and are never exposed through the proxy:
 *   GET /healthz  200 {"status":"ok"} while the process runs (liveness)
 *   GET /readyz   200 when ready for traffic, else 503 naming the failing checks (readiness)
 *   GET /metrics  Prometheus text
 * Every other path is a 404, other methods a 405, both problem+json.
 *
 * Several processes on one host (a proxy and workers started with the default config) cannot all
 * have the default port: when `admin.listen` was not set and its port is taken, the server takes
 * a free port on the same interface and logs it. A port set explicitly that is taken stops the process.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { Server, ServerResponse } from "node:http";
import { MethodNotAllowedError, NotFoundError } from "../errors.js";
import type { Logger } from "../log.js";
import type { Metrics } from "./metrics.js";
import { toHttpUrl } from "../shared/address.js";
import { sendJson, sendProblem } from "../shared/problem.js";
import type { Readiness } from "./readiness.js";

export interface AdminServerOptions {
  listen: { readonly host: string; readonly port: number };
  /** `admin.listen` was set in the config: a taken port is an error, not a reason to pick another. */
  listenExplicit: boolean;
  log: Logger;
  metrics: Metrics;
  readiness: Readiness;
}

export interface AdminServer {
  /** `http://host:port` */
  readonly url: string;
  close(): Promise<void>;
}

const READ_METHODS = ["GET", "HEAD"];
const PATHS = ["/healthz", "/readyz", "/metrics"];

/** Listens on `port`, or rejects with the listen error (EADDRINUSE...). */
async function listenOn(server: Server, host: string, port: number): Promise<void> {
  server.listen(port, host);
  await once(server, "listening");
}

/** Listens where the config says; when that is the default address and its port is taken, on a free port. */
async function listen(server: Server, options: AdminServerOptions): Promise<void> {
  const { host, port } = options.listen;
  try {
    await listenOn(server, host, port);
    return;
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (options.listenExplicit || code !== "EADDRINUSE") {
      throw new Error(`the admin server cannot listen on ${host}:${port} (${code ?? String(cause)}); set admin.listen (port 0 picks a free port)`, {
        cause,
      });
    }
  }
  await listenOn(server, host, 0);
  options.log.warn({ defaultPort: port, url: toHttpUrl(server) }, "the default admin port is taken (another slowlane on this host?): admin listening on a free port");
}

/** Starts the admin server and resolves once it listens; a port in use rejects, unless it was only the default. */
export async function createAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { log, metrics, readiness } = options;

  async function answer(pathname: string, res: ServerResponse): Promise<void> {
    if (pathname === "/healthz") {
      sendJson(res, 200, { status: "ok" });
    } else if (pathname === "/readyz") {
      const report = await readiness.check();
      if (report.ready) sendJson(res, 200, { status: "ok", checks: report.checks });
      else sendJson(res, 503, { status: "unavailable", failed: report.failed, checks: report.checks });
    } else {
      const text = await metrics.render();
      res.writeHead(200, {
        "content-type": metrics.contentType,
        "content-length": Buffer.byteLength(text),
        "cache-control": "no-store",
      });
      res.end(text);
    }
  }

  const server = createServer((req, res) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const pathname = q === -1 ? url : url.slice(0, q);
    req.resume();
    if (!PATHS.includes(pathname)) {
      sendProblem(res, new NotFoundError(`no such admin endpoint; try ${PATHS.join(", ")}`));
      return;
    }
    if (!READ_METHODS.includes(req.method ?? "GET")) {
      sendProblem(res, new MethodNotAllowedError(READ_METHODS));
      return;
    }
    answer(pathname, res).catch((err: unknown) => sendProblem(res, err, { log }));
  });
  // Probes and scrapes are short; an idle connection is not worth keeping long.
  server.keepAliveTimeout = 5_000;
  await listen(server, options);
  const url = toHttpUrl(server);
  log.info({ url }, "admin listening");

  return {
    url,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await closed;
    },
  };
}
