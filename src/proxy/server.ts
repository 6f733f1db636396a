/**
 * The proxy's HTTP server: one dispatch per request, in this order:
 * the jobs endpoints, then the async routes (first match wins), then passthrough.
 */
import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { performance } from "node:perf_hooks";
import type { Config, RouteConfig, RouteMatcher } from "../config/index.js";
import { createRouteMatcher } from "../config/index.js";
import { BadRequestError } from "../errors.js";
import type { Logger } from "../log.js";
import type { AcceptHandler } from "./accept.js";
import type { JobsHandler } from "./job-endpoints.js";
import { normalizeTarget, parseRequestTarget, pathVariants, toOriginForm } from "./normalize-path.js";
import type { Passthrough } from "./passthrough.js";
import { sendProblem, sendProblemOnSocket } from "../shared/problem.js";
import { isAsyncRequest } from "./prefer.js";

export interface HttpHandlers {
  accept: AcceptHandler;
  jobs: JobsHandler;
  /** WebSocket upgrades under the jobs path (the status URL's WebSocket); they never pass through. */
  jobsUpgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  passthrough: Passthrough;
  /** Told of every response sent in full (metrics). */
  observer?: HttpObserver;
}

/** How a request was served: an async route's accept, the jobs endpoints, or passthrough. */
export const RequestModes = ["async", "passthrough", "jobs"] as const;
export type RequestMode = (typeof RequestModes)[number];

/** Told of every response sent in full. Must be cheap and must not throw. */
export interface HttpObserver {
  /** `route` is the async route's name, "" for passthrough and jobs; `durationMs` from the request's start. */
  requestFinished(mode: RequestMode, route: string, status: number, durationMs: number): void;
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

/** {@link SERVER_LIMITS} as `createHttpServer` takes them; tests pass short timeouts. */
export interface ServerLimits {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly maxHeaderSize: number;
  readonly keepAliveTimeoutMs: number;
  /** How often Node looks for connections past the two timeouts; Node's default (30 s) when absent. */
  readonly connectionsCheckingIntervalMs?: number;
}

/** Answers to requests Node's parser refuses, by error code; anything else is a 400. */
const CLIENT_ERROR_ANSWERS: Record<string, readonly [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, "Request Header Fields Too Large"],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, "Payload Too Large"],
  ERR_HTTP_REQUEST_TIMEOUT: [408, "Request Timeout"],
};

/** Why a path is refused when a spelling the backend may read it as routes otherwise (`pathVariants`). */
const AMBIGUOUS = "the path would be routed differently with its slashes merged or its trailing slash removed; send it normalised";

/**
 * The request's target as routed and forwarded, normalised (`normalize-path.ts`) unless it is under
 * `jobsPrefix` as sent (the jobs endpoints never forward, and judge their ids as sent); `undefined`
 * once a 400 has been sent because it cannot be routed safely or the request has two Host headers.
 */
function toRoutedTarget(req: IncomingMessage, res: ServerResponse, log: Logger, jobsPrefix: string): string | undefined {
  try {
    if (countHosts(req.rawHeaders) > 1) throw new BadRequestError("more than one Host header");
    const target = toOriginForm(req.url ?? "/");
    return target.startsWith(jobsPrefix) ? target : normalizeTarget(target);
  } catch (err) {
    refuse(req, res, err, log);
    return undefined;
  }
}

/** A 400 on a request slowlane will not route; its body is not read, so the connection goes. */
function refuse(req: IncomingMessage, res: ServerResponse, err: unknown, log: Logger): void {
  req.resume();
  sendProblem(res, err, { log, headers: { connection: "close" } });
}

/** Host header lines in a request (RFC 9112 §3.2: exactly one is required of HTTP/1.1, at most one of 1.0). */
function countHosts(rawHeaders: readonly string[]): number {
  let hosts = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    // On every request: lower-case only the names that can be "host".
    const name = rawHeaders[i] as string;
    if (name.length === 4 && name.toLowerCase() === "host") hosts += 1;
  }
  return hosts;
}

/**
 * The async route an upgrade request's path (normalised, or any spelling of it) would match, if any. A
 * target that cannot be parsed is left to passthrough, which refuses it.
 */
function asyncRouteOfUpgrade(method: string, target: string, match: RouteMatcher): RouteConfig | undefined {
  let pathname: string;
  try {
    const url = parseRequestTarget(target);
    const q = url.indexOf("?");
    pathname = q === -1 ? url : url.slice(0, q);
  } catch {
    return undefined;
  }
  for (const path of [pathname, ...pathVariants(pathname)]) {
    const route = match(method, path);
    if (route) return route;
  }
  return undefined;
}

/** An upgrade's target as a path when it is on the jobs path (as sent, like the jobs endpoints), else `undefined`. */
function jobsTargetOf(target: string, jobsPath: string): string | undefined {
  let path: string;
  try {
    path = toOriginForm(target);
  } catch {
    return undefined;
  }
  const end = path.search(/[?#]/);
  const pathname = end === -1 ? path : path.slice(0, end);
  return pathname === jobsPath || pathname.startsWith(`${jobsPath}/`) ? path : undefined;
}

/**
 * Upgrades: the jobs path's own (a status URL's WebSocket), refused on an async route's path, else
 * passed through.
 */
function createUpgradeListener(
  handlers: HttpHandlers,
  jobsPath: string,
  matcher: () => RouteMatcher,
): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  return (req, socket, head) => {
  // The jobs path's own upgrades (a status URL's WebSocket) are slowlane's, never passed through.
  const path = jobsTargetOf(req.url ?? "/", jobsPath);
  if (handlers.jobsUpgrade && path !== undefined) {
    req.url = path;
    handlers.jobsUpgrade(req, socket, head);
    return;
  }
  // A WebSocket cannot be a job: an upgrade on an async route's path would reach the backend
  // synchronously, past the queue and its concurrency cap. Refused, as any spelling of that path.
  const route = asyncRouteOfUpgrade(req.method ?? "GET", req.url ?? "/", matcher());
  if (route !== undefined && isAsyncRequest(route, req.headers)) {
    sendProblemOnSocket(socket, new BadRequestError(`the path of async route "${route.name}" cannot be upgraded to a WebSocket`));
    return;
  }
  handlers.passthrough.ws(req, socket, head);
  };
}

/**
 * `config` may be a getter: the config in force is then read per request, so a reload swaps the routes at once
 * (the matcher is compiled once per config). `jobs.path` is read once: changing it needs a restart.
 */
export function createHttpServer(
  config: Config | (() => Config),
  handlers: HttpHandlers,
  log: Logger,
  limits: ServerLimits = SERVER_LIMITS,
): Server {
  const currentConfig = typeof config === "function" ? config : () => config;
  let compiled = { config: currentConfig(), match: createRouteMatcher(currentConfig().routes) };
  const jobsPath = compiled.config.jobs.path;
  const jobsPrefix = `${jobsPath}/`;
  const observer = handlers.observer;

  function matcher(): RouteMatcher {
    const current = currentConfig();
    if (current !== compiled.config) compiled = { config: current, match: createRouteMatcher(current.routes) };
    return compiled.match;
  }

  function observe(res: ServerResponse, mode: RequestMode, route: string, startedAtMs: number): void {
    if (!observer) return;
    res.once("finish", () => observer.requestFinished(mode, route, res.statusCode, performance.now() - startedAtMs));
  }

  const server = createServer(
    {
      maxHeaderSize: limits.maxHeaderSize,
      requestTimeout: limits.requestTimeoutMs,
      ...(limits.connectionsCheckingIntervalMs === undefined
        ? {}
        : { connectionsCheckingInterval: limits.connectionsCheckingIntervalMs }),
    },
    (req, res) => {
      const startedAtMs = observer ? performance.now() : 0;
      const url = toRoutedTarget(req, res, log, jobsPrefix);
      if (url === undefined) return;
      req.url = url;
      const q = url.indexOf("?");
      const pathname = q === -1 ? url : url.slice(0, q);
      if (pathname === jobsPath || pathname.startsWith(jobsPrefix)) {
        observe(res, "jobs", "", startedAtMs);
        void handlers.jobs(req, res, pathname);
        return;
      }
      const match = matcher();
      const method = req.method ?? "GET";
      const route = match(method, pathname);
      // A backend may merge slashes or drop a trailing one: no spelling may be routed otherwise.
      for (const variant of pathVariants(pathname)) {
        if (match(method, variant) !== route) return refuse(req, res, new BadRequestError(AMBIGUOUS), log);
      }
      if (route && isAsyncRequest(route, req.headers)) {
        observe(res, "async", route.name, startedAtMs);
        handlers.accept(req, res, route).catch((err: unknown) => sendProblem(res, err, { log }));
        return;
      }
      observe(res, "passthrough", "", startedAtMs);
      handlers.passthrough.web(req, res);
    },
  );
  server.headersTimeout = limits.headersTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  // Node keeps the first 2,000 headers and silently drops the rest, framing headers included: a
  // Content-Length past them would reach the upstream as an unframed body, that is, as a second
  // request (smuggling). Unlimited here; the head size limit bounds the count anyway.
  server.maxHeadersCount = 0;
  server.on("upgrade", createUpgradeListener(handlers, jobsPath, matcher));
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    // What was wrong, never the error object: Node attaches the raw bytes it read (`rawPacket`), which
    // hold the client's Authorization and cookies.
    log.debug({ code: err.code, reason: err.message }, "malformed request from a client");
    // As Node does: no answer on top of a response already started (a pipelined request that
    // breaks while an earlier answer streams), it would land inside that answer's body.
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (!socket.writable || inFlight?.headersSent === true) return socket.destroy();
    const [status, reason] = CLIENT_ERROR_ANSWERS[err.code ?? ""] ?? [400, "Bad Request"];
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  });
  return server;
}
