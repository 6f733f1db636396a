/**
 * Passthrough: every request that no async route claims goes to the upstream synchronously,
 * streamed both ways over kept-alive connections (an undici Pool); WebSocket upgrades go through
 * http-proxy-3 after the same header checks.
 *
 * Framing is never copied from the client. Node's parser has already read the body's framing and
 * hands over the bytes; undici frames what it forwards: `Content-Length` when the client declared
 * one (undici checks the bytes against it), chunked otherwise, nothing when there is no body. So
 * the framing the backend reads always matches the bytes it gets, whatever the method: a body can
 * never be read as a request of its own (smuggling).
 *
 * Hop-by-hop headers (and those named in `Connection`) are dropped both ways; the client's own
 * `Connection: close` is then honoured by Node's server, which answers `connection: close` and
 * closes. `X-Forwarded-For`, `-Port` and `-Proto` are appended to and `X-Forwarded-Host` kept or
 * set, as http-proxy-3's `xfwd` did. Logs name the path without its query: tokens live there.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import { createProxyServer } from "http-proxy-3";
import { Pool } from "undici";
import type { Dispatcher } from "undici";
import { BackendUnreachableError, BadRequestError } from "../errors.js";
import { lazyChild } from "../log.js";
import type { Logger } from "../log.js";
import { dropHopByHop, withoutHopByHop } from "../shared/hop-by-hop.js";
import { sendProblem, sendProblemOnSocket } from "../shared/problem.js";
import { DISABLED_TRACING, logFields } from "../tracing/index.js";
import type { Tracing } from "../tracing/index.js";
import { parseRequestTarget } from "./normalize-path.js";
import { tracePassthrough } from "./passthrough-trace.js";

export interface Passthrough {
  web(req: IncomingMessage, res: ServerResponse): void;
  ws(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  close(): void;
}

/** Request headers never copied: undici writes its own framing, and X-Forwarded-* are appended to. */
const REPLACED = new Set(["content-length", "transfer-encoding", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto"]);
const KEEP_NONE: ReadonlySet<string> = new Set();
/** An upgrade keeps its `Upgrade` header (and gets `Connection: upgrade` back). */
const KEEP_UPGRADE: ReadonlySet<string> = new Set(["upgrade"]);

/** The request's path without its query, for logs: tokens live in queries. */
function pathOf(req: IncomingMessage): string {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  return q === -1 ? url : url.slice(0, q);
}

/**
 * Passthrough to `upstream` (an `http:` or `https:` URL; a path prefix is kept). Errors never
 * escape: an unreachable upstream is a 502 problem+json.
 */
export function createPassthrough(options: { upstream: string; log: Logger; tracing?: Tracing }): Passthrough {
  const { upstream, log, tracing = DISABLED_TRACING } = options;
  const target = new URL(upstream);
  const prefix = target.pathname === "/" ? "" : target.pathname.replace(/\/$/, "");
  const pool = new Pool(target.origin, {
    // Passthrough has no time limit of its own, as before: a slow synchronous call is the client's choice.
    headersTimeout: 0,
    bodyTimeout: 0,
    // One request at a time per connection: a pipelined one would wait behind a slow answer.
    pipelining: 1,
  });
  const ws = createUpgradeProxy(upstream, log);
  return {
    web(req, res) {
      const codings = req.headers["transfer-encoding"];
      if (codings !== undefined && codings.toLowerCase() !== "chunked") return refuseCodings(req, res);
      const traced = tracePassthrough(tracing, upstream, req, res);
      pool.dispatch(toDispatchOptions(req, prefix), new PassthroughCall(req, res, traced ? lazyChild(log, () => logFields(traced.span)) : log));
    },
    ws,
    close() {
      void pool.destroy().catch(() => undefined);
    },
  };
}

/**
 * `Transfer-Encoding: gzip, chunked`: Node removes the chunked coding only, and undici sends no
 * Transfer-Encoding of ours; forwarding would silently drop the gzip coding. Refused instead.
 */
function refuseCodings(req: IncomingMessage, res: ServerResponse): void {
  req.resume();
  const err = new BadRequestError("a transfer coding other than chunked cannot be forwarded; send the body with Content-Encoding instead");
  sendProblem(res, err, { headers: { connection: "close" } });
}

/** The request as undici sends it: same method, path and end-to-end headers; body streamed. */
function toDispatchOptions(req: IncomingMessage, prefix: string): Dispatcher.DispatchOptions {
  const headers = req.headers;
  // Read before anything is dropped: a `Connection` header may name the framing headers.
  const length = headers["content-length"];
  // Node has checked it is digits; "00" is no body either.
  const hasBody = headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0" && Number(length) > 0);
  dropHopByHop(headers, KEEP_NONE);
  const out: string[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || REPLACED.has(name)) continue;
    if (typeof value === "string") out.push(name, value);
    else for (const v of value) out.push(name, v);
  }
  // undici turns this into its own Content-Length line and fails the call if the bytes disagree.
  if (hasBody && length !== undefined) out.push("content-length", length);
  appendForwarded(req, headers, out);
  return {
    method: req.method as Dispatcher.HttpMethod,
    path: prefix + (req.url ?? "/"),
    headers: out,
    body: hasBody ? req : null,
  };
}

/** X-Forwarded-For, -Port and -Proto appended to (comma-joined, as http-proxy-3 did); -Host kept or set. */
function appendForwarded(req: IncomingMessage, headers: IncomingHttpHeaders, out: string[]): void {
  const encrypted = (req.socket as Partial<TLSSocket>).encrypted === true;
  const host = headers.host;
  const port = (host === undefined ? undefined : /:(\d+)$/.exec(host)?.[1]) ?? (encrypted ? "443" : "80");
  out.push(
    "x-forwarded-for",
    appended(headers["x-forwarded-for"], req.socket.remoteAddress ?? ""),
    "x-forwarded-port",
    appended(headers["x-forwarded-port"], port),
    "x-forwarded-proto",
    appended(headers["x-forwarded-proto"], encrypted ? "https" : "http"),
  );
  if (headers["x-forwarded-host"] === undefined && host !== undefined) out.push("x-forwarded-host", host);
}

/** `prior` as Node joined repeated lines (", "), then `value`. */
function appended(prior: string | string[] | undefined, value: string): string {
  return prior ? `${prior},${value}` : value;
}

/**
 * One passthrough call as undici's dispatch handler: the backend's answer is written to `res` as
 * it arrives, with backpressure both ways (undici pauses reading the client's body when the backend
 * socket is full, and reading the backend when `res` is). This is the handler interface undici's
 * own client calls; the newer controller interface is a wrapper over it that parses every header.
 */
class PassthroughCall implements Dispatcher.DispatchHandler {
  #abort: ((err?: Error) => void) | undefined;
  #resume: (() => void) | undefined;
  #clientGone = false;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly log: Logger,
  ) {
    // A client that goes away before its answer is complete takes the backend call with it.
    res.once("close", () => {
      if (res.writableFinished) return;
      this.#clientGone = true;
      this.#abort?.();
    });
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
    if (this.#clientGone) abort();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    // Interim answers (103) are not relayed; Node's server has already sent its own 100 Continue.
    if (statusCode < 200) return true;
    const headers = withoutHopByHop(rawHeaders.map((h) => h.toString("latin1")));
    // As http-proxy-3 did: the backend's reason phrase when it has one, Node's otherwise.
    if (statusText) this.res.statusMessage = statusText;
    try {
      this.res.writeHead(statusCode, headers);
    } catch (err) {
      // A header or reason phrase Node will not write. Nothing is sent yet: the client gets a 502.
      this.res.statusMessage = "";
      this.#abort?.(err as Error);
      return false;
    }
    this.#resume = resume;
    return true;
  }

  onData(chunk: Buffer): boolean {
    const flowing = this.res.write(chunk);
    // undici stops reading the backend until `resume` is called.
    if (!flowing) this.res.once("drain", this.#resume as () => void);
    return flowing;
  }

  onComplete(): void {
    this.res.end();
  }

  onError(err: Error): void {
    const context = { err, method: this.req.method, path: pathOf(this.req) };
    if (this.#clientGone || this.res.destroyed) {
      this.log.debug(context, "passthrough client went away");
      this.res.destroy();
    } else if ((err as { code?: string }).code === "UND_ERR_INVALID_ARG") {
      // A request Node's parser took but undici will not write (a header value it refuses).
      this.log.debug(context, "passthrough request undici refuses to send");
      sendProblem(this.res, new BadRequestError("the request cannot be forwarded as it is", { cause: err }));
    } else {
      // Unreachable, reset mid-call, or an answer Node will not relay (see onHeaders): a 502 if nothing was sent.
      this.log.warn(context, "upstream unreachable for a passthrough request");
      sendProblem(this.res, new BackendUnreachableError("the upstream could not be reached", { cause: err }));
    }
  }
}

/**
 * WebSocket upgrades: checked as any passthrough request is (one Host, a routable target, which is
 * forwarded normalised; hop-by-hop headers and Proxy-Authorization dropped), plus no body (a
 * handshake has none, and bytes after the head would reach the backend unframed), then relayed by
 * http-proxy-3.
 */
function createUpgradeProxy(upstream: string, log: Logger): Passthrough["ws"] {
  const proxy = createProxyServer({ target: upstream, xfwd: true, ws: true });
  proxy.on("error", (err, req, target) => {
    log.warn({ err, method: req.method, path: pathOf(req) }, "upstream unreachable for a WebSocket upgrade");
    (target as Duplex | undefined)?.destroy();
  });
  return (req, socket, head) => {
    try {
      if ((req.headersDistinct.host?.length ?? 0) > 1) throw new BadRequestError("more than one Host header");
      const length = req.headers["content-length"];
      if (req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0")) {
        throw new BadRequestError("an upgrade request must not have a body");
      }
      req.url = parseRequestTarget(req.url ?? "/");
    } catch (err) {
      sendProblemOnSocket(socket, err);
      return;
    }
    dropHopByHop(req.headers, KEEP_UPGRADE);
    req.headers.connection = "upgrade";
    proxy.ws(req, socket, head);
  };
}

