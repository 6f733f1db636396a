/**
 * WebSocket on the status URL: the status JSON as text messages, at once and at each transition,
 * then a close with code 1000 after the final one. The jobs path is slowlane's own: its upgrades
 * are answered here, never passed through. Refusals (404, 410, 503) are answered in plain HTTP
 * before the handshake, as problem+json.
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import type { WebSocket } from "ws";
import type { Logger } from "../log.js";
import { toProblem } from "../shared/problem.js";
import { followJob } from "./job-follow.js";
import type { Following } from "./job-follow.js";
import type { JobWatch } from "./job-watch.js";
import { KeepAlive } from "./keep-alive.js";
import { isFinalStatus } from "./live-status.js";
import type { LiveStatus } from "./live-status.js";
import type { CachedJob } from "./result-cache.js";
import { KEEPALIVE_MS } from "./status-stream.js";

export interface StatusSocketDeps {
  watch: JobWatch;
  live: LiveStatus;
  jobsPath: string;
  log: Logger;
}

export interface StatusSockets {
  /** Follows job `id` over the upgraded connection, or refuses the upgrade. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, id: string, find: () => Promise<CachedJob>): Promise<void>;
  /** Refuses an upgrade with an error's problem+json answer. */
  refuse(socket: Duplex, err: unknown): void;
  /** Closes every open status socket (code 1001). */
  close(): void;
}

/** The close code of a socket whose job ended (RFC 6455 normal closure). */
export const CLOSE_FINAL = 1000;
/** The close code when the proxy shuts down: reconnect, to another replica. */
export const CLOSE_GOING_AWAY = 1001;

export function createStatusSockets(deps: StatusSocketDeps): StatusSockets {
  // Clients send nothing: a tiny payload limit, no compression to negotiate.
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024, perMessageDeflate: false, clientTracking: true });

  function refuse(socket: Duplex, err: unknown): void {
    const problem = toProblem(err);
    if (problem.status >= 500 && problem.code !== "SLOWLANE_NATS_UNAVAILABLE" && problem.code !== "SLOWLANE_WAIT_LIMIT") {
      deps.log.error({ err }, "unexpected error while answering a WebSocket upgrade");
    }
    const body = JSON.stringify(problem);
    const head = [
      `HTTP/1.1 ${problem.status} ${problem.title}`,
      "content-type: application/problem+json",
      `content-length: ${Buffer.byteLength(body)}`,
      "cache-control: no-store",
      "connection: close",
    ];
    if (socket.writable) socket.end(`${head.join("\r\n")}\r\n\r\n${body}`);
    else socket.destroy();
  }

  const pings = new KeepAlive<WebSocket>(KEEPALIVE_MS, (ws) => ws.ping());

  function serve(ws: WebSocket, { body, follower }: Following): void {
    ws.on("error", () => undefined);
    ws.send(deps.live.toJson(body));
    if (isFinalStatus(body.status)) {
      ws.close(CLOSE_FINAL);
      return;
    }
    pings.add(ws);
    ws.once("close", () => {
      pings.delete(ws);
      follower.stop();
    });
    follower.start(
      (update) => {
        ws.send(deps.live.toJson(update.body, update.json));
        if (isFinalStatus(update.body.status)) ws.close(CLOSE_FINAL);
      },
      () => ws.close(CLOSE_GOING_AWAY),
    );
  }

  return {
    refuse,
    async upgrade(req, socket, head, id, find) {
      socket.on("error", () => undefined);
      let following: Following;
      try {
        following = await followJob(deps, id, find);
      } catch (err) {
        refuse(socket, err);
        return;
      }
      const { follower } = following;
      if (socket.destroyed) {
        follower.stop();
        return;
      }
      // A handshake ws refuses (not a WebSocket request) closes the socket without calling back.
      socket.once("close", () => follower.stop());
      wss.handleUpgrade(req, socket, head, (ws) => serve(ws, following));
    },
    close() {
      for (const ws of wss.clients) ws.close(CLOSE_GOING_AWAY);
      wss.close();
    },
  };
}
