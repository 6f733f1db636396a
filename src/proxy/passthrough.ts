/**
 * Passthrough: every request that no async route claims goes to the upstream synchronously,
 * streamed both ways, over kept-alive connections, WebSocket upgrades included. http-proxy-3
 * throws on errors when no handler is attached, so one is always attached: an unreachable
 * upstream becomes a 502 problem+json, never a crash.
 */
import { Agent as HttpAgent } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import type { Duplex } from "node:stream";
import { createProxyServer } from "http-proxy-3";
import { BackendUnreachableError } from "../errors.js";
import type { Logger } from "../log.js";
import { dropHopByHop } from "../shared/hop-by-hop.js";
import { sendProblem } from "../shared/problem.js";
import { DISABLED_TRACING, endSpan, injectTraceHeaderRecord, logFields, startClientSpan, startServerSpan } from "../tracing/index.js";
import type { TracedSpan, Tracing } from "../tracing/index.js";

export interface Passthrough {
  web(req: IncomingMessage, res: ServerResponse): void;
  ws(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  close(): void;
}

/**
 * Kept even when named in `Connection`: http-proxy-3 copies them to the upstream request, and without
 * them Node would send a GET's body unframed, which the upstream reads as a second request.
 */
const FRAMING = new Set(["content-length", "transfer-encoding"]);

/**
 * A passthrough request's SERVER span and its CLIENT span to the upstream (whose context the
 * upstream receives in `traceparent`), both ended when the answer is sent. Off: nothing at all.
 */
function tracePassthrough(tracing: Tracing, upstream: string, req: IncomingMessage, res: ServerResponse): TracedSpan | undefined {
  if (!tracing.enabled) return undefined;
  const method = req.method ?? "GET";
  const server = startServerSpan(tracing, req, method);
  const client = startClientSpan(tracing, server.context, { method, url: upstream + (req.url ?? "/") });
  injectTraceHeaderRecord(client.context, req.headers);
  res.once("close", () => {
    const end = { outcome: res.writableFinished ? String(res.statusCode) : "aborted", status: res.statusCode };
    endSpan(client.span, end);
    endSpan(server.span, end);
  });
  return server;
}

export function createPassthrough(options: { upstream: string; log: Logger; tracing?: Tracing }): Passthrough {
  const { upstream } = options;
  const tracing = options.tracing ?? DISABLED_TRACING;
  const log = options.log;
  const agentOptions = { keepAlive: true, keepAliveMsecs: 1_000, maxFreeSockets: 256 };
  const agent = upstream.startsWith("https:") ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
  const proxy = createProxyServer({ target: upstream, xfwd: true, ws: true, agent });
  /** The server span of each traced request, for the error handler's log line. */
  const spans = new WeakMap<IncomingMessage, TracedSpan>();

  proxy.on("error", (err, req, target) => {
    const traced = spans.get(req);
    (traced ? log.child(logFields(traced.span)) : log).warn({ err, method: req.method, url: req.url }, "upstream unreachable for a passthrough request");
    if (target && "writeHead" in target) {
      sendProblem(target as ServerResponse, new BackendUnreachableError("the upstream could not be reached", { cause: err }));
    } else {
      (target as Duplex | undefined)?.destroy();
    }
  });

  return {
    web(req, res) {
      // http-proxy-3 forwards every request header but `trailer`; hop-by-hop headers and those
      // named in Connection describe the client's connection only (RFC 9110 §7.6.1).
      dropHopByHop(req.headers, FRAMING);
      const traced = tracePassthrough(tracing, upstream, req, res);
      if (traced) spans.set(req, traced);
      proxy.web(req, res);
    },
    ws: (req, socket, head) => proxy.ws(req, socket, head),
    close() {
      proxy.close();
      agent.destroy();
    },
  };
}
