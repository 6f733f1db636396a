/**
 * A real HTTP backend on port 0 that records every call, for tests. Behaviour by path:
 *   /slow?ms=N&status=S   waits N ms, then answers S (default 200) with JSON about the request
 *   /binary?size=N        N bytes of a fixed pattern, with repeated set-cookie and custom headers
 *   /fail                 500 with a text body and an x-error header
 *   /flaky, /flaky/**?key=K&fails=N&status=S&retryAfter=R
 *                         the first N calls with key K answer S (default 503, with Retry-After: R if
 *                         given), later ones 200 JSON { key, calls }
 *   /echo, /echo/**       JSON echo of method, url, headers and the body (base64)
 *   /reply, /reply/**?size=N&status=S
 *                         S (default 200), N bytes (at least one marker) of text repeating the
 *                         request's `x-reply-marker` header, which is also in a set-cookie and x-reply
 *   /hang                 never answers
 *   anything else         200 JSON { method, url }
 * Upgrade requests are switched (101) and echo bytes back.
 */
import { createServer } from "node:http";
import type { IncomingHttpHeaders, Server, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { once } from "node:events";

export interface BackendCall {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface TestBackend {
  readonly url: string;
  readonly port: number;
  readonly calls: BackendCall[];
  /** Calls being answered right now. */
  readonly inFlight: number;
  /** Highest `inFlight` seen. */
  readonly maxInFlight: number;
  callsTo(pathPrefix: string): BackendCall[];
  /** Starts a new `maxInFlight` measurement from the calls in flight now. */
  resetPeak(): void;
  close(): Promise<void>;
}

export function binaryPattern(size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + 7) % 256;
  return buf;
}

function json(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

export async function startTestBackend(port = 0): Promise<TestBackend> {
  const calls: BackendCall[] = [];
  const sockets = new Set<Socket>();
  let inFlight = 0;
  let maxInFlight = 0;

  const flakyCalls = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      calls.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      let done = false;
      const finish = () => {
        if (!done) {
          done = true;
          inFlight -= 1;
        }
      };
      res.on("close", finish);
      const url = new URL(req.url ?? "/", "http://backend");
      const prefixed = ["/echo", "/flaky", "/reply"].find((p) => url.pathname.startsWith(`${p}/`));
      const kind = prefixed ?? url.pathname;
      switch (kind) {
        case "/slow": {
          const ms = Number(url.searchParams.get("ms") ?? 0);
          const status = Number(url.searchParams.get("status") ?? 200);
          setTimeout(() => json(res, status, { method: req.method, url: req.url, bodyBytes: body.byteLength }), ms);
          return;
        }
        case "/binary": {
          const data = binaryPattern(Number(url.searchParams.get("size") ?? 1024));
          res.writeHead(201, [
            "content-type", "application/octet-stream",
            "x-custom", "kept",
            "set-cookie", "a=1; Path=/",
            "set-cookie", "b=2; Path=/",
            "content-length", String(data.byteLength),
          ]);
          res.end(data);
          return;
        }
        case "/fail":
          res.writeHead(500, { "content-type": "text/plain", "x-error": "boom" });
          res.end("backend exploded");
          return;
        case "/flaky": {
          const key = url.searchParams.get("key") ?? "";
          const n = (flakyCalls.get(key) ?? 0) + 1;
          flakyCalls.set(key, n);
          if (n <= Number(url.searchParams.get("fails") ?? 0)) {
            const retryAfter = url.searchParams.get("retryAfter");
            res.writeHead(Number(url.searchParams.get("status") ?? 503), retryAfter === null ? {} : { "retry-after": retryAfter });
            res.end("try again");
            return;
          }
          json(res, 200, { key, calls: n });
          return;
        }
        case "/echo":
          json(res, 200, { method: req.method, url: req.url, headers: req.headers, body: body.toString("base64") });
          return;
        case "/reply": {
          const marker = String(req.headers["x-reply-marker"] ?? "marker");
          const size = Math.max(Number(url.searchParams.get("size") ?? 0), marker.length);
          const text = `${marker} `.repeat(Math.ceil(size / (marker.length + 1))).slice(0, size);
          res.writeHead(Number(url.searchParams.get("status") ?? 200), [
            "content-type", "text/plain",
            "set-cookie", `session=${marker}; HttpOnly`,
            "x-reply", marker,
            "content-length", String(Buffer.byteLength(text)),
          ]);
          res.end(text);
          return;
        }
        case "/hang":
          return;
        default:
          json(res, 200, { method: req.method, url: req.url });
      }
    });
  });
  // WebSocket-style upgrade: switch protocols, then echo every byte back.
  server.on("upgrade", (_req, socket: Socket) => {
    socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n");
    socket.pipe(socket);
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  const actualPort = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${actualPort}`,
    port: actualPort,
    calls,
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    callsTo: (prefix) => calls.filter((c) => c.url.startsWith(prefix)),
    resetPeak() {
      maxInFlight = inFlight;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
