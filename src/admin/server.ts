/**
 * The admin server, on its own port (`admin.listen`) so that probes and scrapes never queue
 * behind client traffic and are never exposed through the proxy:
 *   GET /healthz  200 {"status":"ok"} while the process runs (liveness)
 *   GET /readyz   200 when ready for traffic, else 503 naming the failing checks (readiness)
 *   GET /metrics  Prometheus text
 * Every other path is a 404, other methods a 405, both problem+json.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { ServerResponse } from "node:http";
import { MethodNotAllowedError, NotFoundError } from "../errors.js";
import type { Logger } from "../log.js";
import type { Metrics } from "./metrics.js";
import { toHttpUrl } from "../shared/address.js";
import { sendJson, sendProblem } from "../shared/problem.js";
import type { Readiness } from "./readiness.js";

export interface AdminServerOptions {
  listen: { readonly host: string; readonly port: number };
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

/** Starts the admin server and resolves once it listens; a port in use rejects. */
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
  server.listen(options.listen.port, options.listen.host);
  try {
    await once(server, "listening");
  } catch (cause) {
    const { host, port } = options.listen;
    const reason = (cause as NodeJS.ErrnoException).code ?? String(cause);
    throw new Error(`the admin server cannot listen on ${host}:${port} (${reason}); set admin.listen (port 0 picks a free port)`, {
      cause,
    });
  }
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
