/**
 * The proxy's HTTP server: one dispatch per request, in this order:
 * the jobs endpoints, then the async routes (first match wins), then passthrough.
 */
import { createServer } from "node:http";
import type { Server } from "node:http";
import type { Config } from "../config/index.js";
import { createRouteMatcher } from "../config/index.js";
import type { Logger } from "../log.js";
import type { AcceptHandler } from "./accept.js";
import type { JobsHandler } from "./jobs.js";
import type { Passthrough } from "./passthrough.js";
import { sendProblem } from "./problem.js";

export interface HttpHandlers {
  accept: AcceptHandler;
  jobs: JobsHandler;
  passthrough: Passthrough;
}

/** Limits of Node's HTTP server, set on purpose (the README's HTTP contract lists them). */
export const SERVER_LIMITS = {
  /** Whole request head must arrive within this; slow-header clients get 408. */
  headersTimeoutMs: 30_000,
  /** Whole request (head and body) must arrive within this. */
  requestTimeoutMs: 5 * 60_000,
  /** Request head size limit; larger heads get 431. */
  maxHeaderSize: 32 * 1024,
  /** Idle keep-alive connections are closed after this. */
  keepAliveTimeoutMs: 65_000,
} as const;

/** Answers to requests Node's parser refuses, by error code; anything else is a 400. */
const CLIENT_ERROR_ANSWERS: Record<string, readonly [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, "Request Header Fields Too Large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "Request Timeout"],
};

export function createHttpServer(config: Config, handlers: HttpHandlers, log: Logger): Server {
  const match = createRouteMatcher(config.routes);
  const jobsPath = config.jobs.path;
  const jobsPrefix = `${jobsPath}/`;

  const server = createServer(
    { maxHeaderSize: SERVER_LIMITS.maxHeaderSize, requestTimeout: SERVER_LIMITS.requestTimeoutMs },
    (req, res) => {
      const url = req.url ?? "/";
      const q = url.indexOf("?");
      const pathname = q === -1 ? url : url.slice(0, q);
      if (pathname === jobsPath || pathname.startsWith(jobsPrefix)) {
        void handlers.jobs(req, res, pathname);
        return;
      }
      const route = match(req.method ?? "GET", pathname);
      if (route) {
        handlers.accept(req, res, route).catch((err: unknown) => sendProblem(res, err, { log }));
        return;
      }
      handlers.passthrough.web(req, res);
    },
  );
  server.headersTimeout = SERVER_LIMITS.headersTimeoutMs;
  server.keepAliveTimeout = SERVER_LIMITS.keepAliveTimeoutMs;
  server.on("upgrade", (req, socket, head) => handlers.passthrough.ws(req, socket, head));
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    log.debug({ err }, "malformed request from a client");
    if (!socket.writable) return socket.destroy();
    const [status, reason] = CLIENT_ERROR_ANSWERS[err.code ?? ""] ?? [400, "Bad Request"];
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  });
  return server;
}
