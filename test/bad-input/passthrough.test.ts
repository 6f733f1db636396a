/**
 * Passthrough seen from both ends: what the client gets back (status, headers, the connection's
 * fate) and what the backend's socket receives, WebSocket upgrades included. The backend is the raw
 * recording one (`raw-backend.ts`); a second slowlane points at a port nobody listens on.
 */
import { createHash } from "node:crypto";
import { once } from "node:events";
import { createServer, request as httpRequest } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getFreePort, startNatsServer } from "../helpers/nats.js";
import type { NatsServer } from "../helpers/nats.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { startRawBackend } from "./raw-backend.js";
import type { RawBackend, ReceivedRequest } from "./raw-backend.js";
import { head, sendRaw } from "./raw-http.js";

/** Answers the backend gives on special paths, each a whole HTTP/1.1 response. */
function respond(request: ReceivedRequest): string | undefined {
  if (request.target === "/cookies") {
    return head(
      "HTTP/1.1 201 Created",
      "Set-Cookie: a=1; Path=/",
      "X-Custom: kept",
      "Set-Cookie: b=2; Path=/",
      "Content-Length: 2",
    ) + "ok";
  }
  if (request.target === "/hop-headers") {
    // Hop-by-hop headers of the backend's connection, and one it names in Connection.
    return head(
      "HTTP/1.1 200 OK",
      "Connection: keep-alive, X-Backend-Hop",
      "Keep-Alive: timeout=1",
      "X-Backend-Hop: private",
      "Proxy-Authenticate: Basic",
      "Trailer: X-Sum",
      "Transfer-Encoding: chunked",
    ) + "2\r\nok\r\n0\r\n\r\n";
  }
  return undefined;
}

/**
 * A plain Node backend for volume: `PUT /upload` answers the SHA-256 and size of the body it read;
 * `GET /download?size=N` streams N bytes of a pattern.
 */
function startStreamingBackend(): Server {
  return createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://backend");
    if (url.pathname.endsWith("/upload")) {
      const hash = createHash("sha256");
      let bytes = 0;
      req.on("data", (c: Buffer) => {
        hash.update(c);
        bytes += c.length;
      });
      req.on("end", () => res.end(JSON.stringify({ url: req.url, bytes, sha256: hash.digest("hex") })));
      return;
    }
    let left = Number(url.searchParams.get("size") ?? 0);
    const chunk = Buffer.alloc(64 * 1024, 7);
    const pump = () => {
      while (left > 0) {
        const piece = chunk.subarray(0, Math.min(chunk.length, left));
        left -= piece.length;
        if (!res.write(piece)) return void res.once("drain", pump);
      }
      res.end();
    };
    res.writeHead(200, { "content-type": "application/octet-stream" });
    pump();
  }).listen(0, "127.0.0.1");
}

let nats: NatsServer;
let backend: RawBackend;
let streaming: Server;
let slowlane: TestApp;
let orphan: TestApp;
let prefixed: TestApp;
let port: number;

beforeAll(async () => {
  streaming = startStreamingBackend();
  [nats, backend] = await Promise.all([startNatsServer(), startRawBackend(respond), once(streaming, "listening")]);
  const config = (upstream: string) =>
    makeConfig({
      listen: "127.0.0.1:0",
      upstream,
      nats: { servers: nats.url, stream: uniqueStream("passthrough") },
      routes: [{ name: "reports", methods: ["POST"], path: "/reports/**" }],
    });
  slowlane = await startApp(config(backend.url), "proxy");
  orphan = await startApp(config(`http://127.0.0.1:${await getFreePort()}`), "proxy");
  prefixed = await startApp(config(`http://127.0.0.1:${(streaming.address() as AddressInfo).port}/base/`), "proxy");
  port = Number(new URL(slowlane.url).port);
});

afterAll(async () => {
  await Promise.all([slowlane?.close(), orphan?.close(), prefixed?.close()]);
  streaming?.closeAllConnections();
  await Promise.all([backend?.close(), nats?.close(), new Promise((resolve) => streaming?.close(resolve))]);
});

const H = "Host: slowlane.test";

/** The requests the backend parsed while `run` ran. */
async function backendSaw<T>(run: () => Promise<T>): Promise<{ result: T; requests: ReceivedRequest[] }> {
  const before = backend.requests.length;
  const result = await run();
  return { result, requests: backend.requests.slice(before) };
}

describe("the client's connection", () => {
  it("Connection: close is honoured: the answer says close and the connection ends (RFC 9112 §9.6)", async () => {
    const exchange = await sendRaw(port, head("GET /closing HTTP/1.1", H, "Connection: close"), { idleMs: 2_000 });
    expect(exchange.last?.status).toBe(200);
    expect(exchange.last?.headers.connection).toBe("close");
    expect(exchange.timedOut).toBe(false);
    expect(exchange.closed).toBe(true);
  });

  it("without Connection: close, the connection stays open for the next request", async () => {
    const raw = head("GET /one HTTP/1.1", H) + head("GET /two HTTP/1.1", H);
    const exchange = await sendRaw(port, raw, { finalResponses: 2 });
    expect(exchange.responses.map((r) => r.status)).toEqual([200, 200]);
    expect(exchange.closed).toBe(false);
  });
});

describe("the backend's answer, replayed", () => {
  it("status, headers (repeated Set-Cookie kept, in order) and body", async () => {
    const exchange = await sendRaw(port, head("GET /cookies HTTP/1.1", H), { finalResponses: 1 });
    expect(exchange.last?.status).toBe(201);
    expect(exchange.last?.body.toString()).toBe("ok");
    expect(exchange.last?.headers["x-custom"]).toBe("kept");
    const lines = exchange.raw.toString("latin1").split("\r\n");
    expect(lines.filter((l) => /^set-cookie:/i.test(l)).map((l) => l.toLowerCase())).toEqual(["set-cookie: a=1; path=/", "set-cookie: b=2; path=/"]);
  });

  it("without the backend's hop-by-hop headers", async () => {
    const exchange = await sendRaw(port, head("GET /hop-headers HTTP/1.1", H), { finalResponses: 1 });
    expect(exchange.last?.status).toBe(200);
    expect(exchange.last?.body.toString()).toBe("ok");
    const headers = exchange.last?.headers ?? {};
    expect(headers["x-backend-hop"]).toBeUndefined();
    expect(headers["proxy-authenticate"]).toBeUndefined();
    expect(headers.trailer).toBeUndefined();
    expect(headers["keep-alive"]).not.toBe("timeout=1");
    expect(headers.connection ?? "").not.toMatch(/x-backend-hop/i);
  });
});

describe("volume, streamed both ways, under the upstream's path prefix", () => {
  it("a 24 MiB chunked upload arrives whole; a 24 MiB download comes back whole", async () => {
    const size = 24 * 1024 * 1024;
    const sent = createHash("sha256");
    const upload = await new Promise<{ url: string; bytes: number; sha256: string }>((resolve, reject) => {
      const req = httpRequest(`${prefixed.url}/data/upload?x=1`, { method: "PUT" }, (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => resolve(JSON.parse(text) as { url: string; bytes: number; sha256: string }));
      });
      req.on("error", reject);
      let left = size;
      const write = () => {
        while (left > 0) {
          const piece = Buffer.alloc(Math.min(100_000, left), left % 251);
          left -= piece.length;
          sent.update(piece);
          if (!req.write(piece)) return void req.once("drain", write);
        }
        req.end();
      };
      write();
    });
    expect(upload).toEqual({ url: "/base/data/upload?x=1", bytes: size, sha256: sent.digest("hex") });

    const received = await new Promise<number>((resolve, reject) => {
      httpRequest(`${prefixed.url}/data/download?size=${size}`, (res) => {
        let bytes = 0;
        res.on("data", (d: Buffer) => (bytes += d.length));
        res.on("end", () => resolve(bytes));
      })
        .on("error", reject)
        .end();
    });
    expect(received).toBe(size);
  });
});

describe("an unreachable upstream", () => {
  it("a request with a body: 502 problem+json, the connection still usable", async () => {
    const orphanPort = Number(new URL(orphan.url).port);
    const raw = head("PUT /p HTTP/1.1", H, "Content-Length: 5") + "hello" + head("GET /after HTTP/1.1", H);
    const exchange = await sendRaw(orphanPort, raw, { finalResponses: 2 });
    expect(exchange.responses.map((r) => r.status)).toEqual([502, 502]);
    expect(exchange.closed).toBe(false);
  });

  it("502 problem+json; the log names the path without its query (tokens live there)", async () => {
    const orphanPort = Number(new URL(orphan.url).port);
    const exchange = await sendRaw(orphanPort, head("GET /private/path?token=s3cr3t-t0ken&x=1 HTTP/1.1", H), { finalResponses: 1 });
    expect(exchange.last?.status).toBe(502);
    expect(exchange.last?.headers["content-type"]).toBe("application/problem+json");
    expect(JSON.parse(exchange.last?.body.toString() ?? "")).toMatchObject({ status: 502, code: "SLOWLANE_UPSTREAM_UNREACHABLE" });
    const warnings = orphan.logs.filter((l) => (l.level ?? 0) >= 40);
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings.some((l) => JSON.stringify(l).includes("/private/path"))).toBe(true);
    for (const line of orphan.logs) expect(JSON.stringify(line)).not.toContain("s3cr3t-t0ken");
  });
});

describe("WebSocket upgrades pass the same checks as other passthrough requests", () => {
  const upgrade = (...extra: string[]) =>
    head("GET /./ws/../ws?room=1 HTTP/1.1", H, "Connection: Upgrade, X-Hop", "Upgrade: websocket", ...extra);

  it("hop-by-hop and Proxy-Authorization dropped, the path normalised, bytes relayed both ways", async () => {
    const { result: exchange, requests } = await backendSaw(() =>
      sendRaw(
        port,
        [upgrade("Proxy-Authorization: Basic c2VjcmV0", "X-Hop: first hop only", "Keep-Alive: timeout=5", "X-Kept: yes"), "ping"],
        { gapMs: 50, idleMs: 500 },
      ),
    );
    expect(exchange.responses[0]?.status).toBe(101);
    expect(exchange.raw.toString("latin1")).toMatch(/\r\n\r\nping$/);
    expect(requests.map((r) => `${r.method} ${r.target}`)).toEqual(["GET /ws?room=1"]);
    const sent = requests[0] as ReceivedRequest;
    for (const name of ["proxy-authorization", "x-hop", "keep-alive"]) expect(backend.header(sent, name), name).toEqual([]);
    expect(backend.header(sent, "x-kept")).toEqual(["yes"]);
    expect(backend.header(sent, "upgrade")).toEqual(["websocket"]);
    expect(backend.header(sent, "connection").join(",")).toMatch(/upgrade/i);
  });

  it.each([
    ["two Host headers", upgrade("Host: other.example")],
    ["an encoded slash in the path", head("GET /ws%2Fx HTTP/1.1", H, "Connection: Upgrade", "Upgrade: websocket")],
    ["dot segments above the root", head("GET /../ws HTTP/1.1", H, "Connection: Upgrade", "Upgrade: websocket")],
    ["a body", upgrade("Content-Length: 5") + "hello"],
  ])("%s: 400 problem+json, nothing forwarded", async (_name, raw) => {
    const { result: exchange, requests } = await backendSaw(() => sendRaw(port, raw));
    expect(exchange.responses.map((r) => r.status)).toEqual([400]);
    expect(exchange.last?.headers["content-type"]).toBe("application/problem+json");
    expect(exchange.closed).toBe(true);
    expect(requests).toEqual([]);
  });
});
