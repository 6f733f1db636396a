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

export function createPassthrough(options: { upstream: string; log: Logger }): Passthrough {
  const { upstream, log } = options;
  const agentOptions = { keepAlive: true, keepAliveMsecs: 1_000, maxFreeSockets: 256 };
  const agent = upstream.startsWith("https:") ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
  const proxy = createProxyServer({ target: upstream, xfwd: true, ws: true, agent });

  proxy.on("error", (err, req, target) => {
    log.warn({ err, method: req.method, url: req.url }, "upstream unreachable for a passthrough request");
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
      proxy.web(req, res);
    },
    ws: (req, socket, head) => proxy.ws(req, socket, head),
    close() {
      proxy.close();
      agent.destroy();
    },
  };
}
