/**
 * What keeps the proxy's memory bounded under slow and hostile clients, seen from outside: a result
 * is read from the store only as fast as its client takes it (a stalled client does not make the
 * proxy read the whole object, and does not stop another client); request bodies in 1-byte chunks
 * arrive intact; the in-flight body budget answers 503 and recovers; `server.maxConnections`
 * refuses the extra connection. The figures (peak RSS) are in `npm run bench`; nothing here asserts
 * on memory or time.
 */
import { once } from "node:events";
import { connect } from "node:net";
import type { Socket } from "node:net";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { binaryPattern } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { fetchResult, JOBS, waitFinal } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const MiB = 1024 * 1024;
const env = useNatsAndBackend();

function configFor(stream: string, extra: Record<string, unknown> = {}) {
  return makeConfig({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "5s" },
    defaults: { timeout: "20s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    routes: [
      { name: "binary", methods: ["GET"], path: "/binary" },
      { name: "echo", methods: ["POST"], path: "/echo/**" },
    ],
    ...extra,
  });
}

/** Bytes nats-server has sent to the proxy's connection (its monitoring `/connz`). */
async function bytesSentToProxy(): Promise<number> {
  const res = await fetch(`${env.nats.monitorUrl}/connz`);
  const connz = (await res.json()) as { connections?: { name?: string; out_bytes: number }[] };
  const proxies = (connz.connections ?? []).filter((c) => c.name === "slowlane-proxy");
  if (proxies.length !== 1) throw new Error(`expected one slowlane-proxy connection, found ${proxies.length}`);
  return (proxies[0] as { out_bytes: number }).out_bytes;
}

/** Polls `read` until it gives the same value three times in a row (something stopped moving). */
async function settled(read: () => Promise<number>, what: string): Promise<number> {
  let last = -1;
  let same = 0;
  return waitFor(
    async () => {
      const now = await read();
      same = now === last ? same + 1 : 0;
      last = now;
      return same >= 2 ? now : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 250, what },
  );
}

/** A raw GET whose answer is not read until `drain()`: a client that stalls. */
async function stalledGet(url: string, path: string): Promise<{ socket: Socket; drain(): Promise<Buffer> }> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  await once(socket, "connect");
  socket.pause();
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  return {
    socket,
    async drain() {
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => chunks.push(c));
      socket.resume();
      await once(socket, "end");
      return Buffer.concat(chunks);
    },
  };
}

describe("results stream at the pace of their client", () => {
  const size = 32 * MiB;
  let proxy: TestApp;
  let id: string;

  beforeAll(async () => {
    const config = configFor(uniqueStream("stall"));
    const [started, worker] = await Promise.all([startApp(config, "proxy"), startApp(config, "worker")]);
    proxy = started;
    await Promise.all([proxy.app.ready, worker.app.ready]);
    const accepted = await request(proxy.url).get(`/binary?size=${size}`);
    expect(accepted.status).toBe(202);
    id = accepted.body.id as string;
    await waitFinal(proxy.url, id, 30_000);
    await worker.close();
  });
  afterAll(async () => {
    await proxy?.close();
  });

  it("a stalled client holds back its own read only; another client gets the whole result meanwhile", async () => {
    const before = await bytesSentToProxy();
    const stalled = await stalledGet(proxy.url, `${JOBS}/${id}/result`);
    try {
      const other = await fetchResult(proxy.url, id);
      expect(other.status).toBe(201);
      expect(Buffer.compare(other.body as Buffer, binaryPattern(size))).toBe(0);

      // The other client's read is done; the stalled one's stops where the socket is full.
      const read = (await settled(bytesSentToProxy, "the proxy's reads to stop")) - before;
      expect(read).toBeGreaterThanOrEqual(size);
      expect(read).toBeLessThan(size + size / 2);

      const raw = await stalled.drain();
      const body = raw.subarray(raw.indexOf("\r\n\r\n") + 4);
      expect(raw.subarray(0, 12).toString()).toBe("HTTP/1.1 201");
      expect(Buffer.compare(body, binaryPattern(size))).toBe(0);
    } finally {
      stalled.socket.destroy();
    }
  });

  it("a client that goes away mid-result stops the read", async () => {
    const stalled = await stalledGet(proxy.url, `${JOBS}/${id}/result`);
    await settled(bytesSentToProxy, "the stalled read to stop");
    stalled.socket.destroy();
    await waitFor(() => proxy.logs.find((l) => l.msg === "client went away mid-result; stopped reading it" && l.job === id), {
      what: "the proxy to stop reading",
    });
    const after = await settled(bytesSentToProxy, "the proxy's reads to stop");
    // Nothing more is read for that client: a HEAD costs no read either.
    const head = await request(proxy.url).head(`${JOBS}/${id}/result`);
    expect(head.status).toBe(201);
    expect(head.headers["content-length"]).toBe(String(size));
    expect((await settled(bytesSentToProxy, "the proxy's reads to stop")) - after).toBeLessThan(MiB);
  });
});

/** A chunked request whose body goes in 1-byte chunks (each a Buffer of its own at the proxy). */
function oneByteChunked(path: string, body: Buffer): Buffer {
  const parts: Buffer[] = [Buffer.from(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`)];
  const chunked = Buffer.alloc(body.byteLength * 6);
  for (let i = 0; i < body.byteLength; i++) {
    chunked.write("1\r\n", i * 6, "latin1");
    chunked[i * 6 + 3] = body[i] as number;
    chunked.write("\r\n", i * 6 + 4, "latin1");
  }
  parts.push(chunked, Buffer.from("0\r\n\r\n"));
  return Buffer.concat(parts);
}

/** Resolves when the socket has closed, whether or not it errored first (events.once would reject). */
function closed(socket: Socket): Promise<void> {
  return new Promise((resolve) => socket.once("close", () => resolve()));
}

/** Sends raw bytes and resolves with everything the server answered once it closes. */
async function exchange(url: string, bytes: Buffer): Promise<string> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.on("error", () => undefined);
  // Not end(): Node's server drops a request whose client half-closes before the answer.
  socket.write(bytes);
  await closed(socket);
  return Buffer.concat(chunks).toString("latin1");
}

describe("request bodies in 1-byte chunks", () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startApp(configFor(uniqueStream("onebyte")));
    await app.app.ready;
  });
  afterAll(async () => {
    await app?.close();
  });

  it.each([
    ["in memory", 200 * 1024],
    ["through the Object Store", 1100 * 1024],
  ])("arrive intact at the backend (%s)", async (_how, size) => {
    const body = binaryPattern(size);
    for (let i = 0; i < size; i += 997) body[i] = (i >> 8) & 0xff;
    const path = `/echo/onebyte-${size}`;
    const answer = await exchange(app.url, oneByteChunked(path, body));
    expect(answer.slice(0, 12)).toBe("HTTP/1.1 202");
    const id = (JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)) as { id: string }).id;
    await waitFinal(app.url, id, 30_000);
    const calls = env.backend.callsTo(path);
    expect(calls).toHaveLength(1);
    expect(Buffer.compare((calls[0] as { body: Buffer }).body, body)).toBe(0);
  });

  it("arrive intact when several upload at once and take turns, while the proxy answers other requests", async () => {
    // 100 KiB in 1-byte chunks is several turns' worth; only two such readers read at once.
    const bodies = Array.from({ length: 5 }, (_, n) => Buffer.alloc(100 * 1024, n + 1));
    const uploads = bodies.map((body, n) => exchange(app.url, oneByteChunked(`/echo/turns-${n}`, body)));
    expect((await fetch(`${app.app.adminUrl}/healthz`)).status).toBe(200);
    expect((await request(app.url).get(`${JOBS}/not-an-id`)).status).toBe(404);
    const answers = await Promise.all(uploads);
    const ids = answers.map((answer) => {
      expect(answer.slice(0, 12)).toBe("HTTP/1.1 202");
      return (JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)) as { id: string }).id;
    });
    await Promise.all(ids.map((id) => waitFinal(app.url, id, 30_000)));
    bodies.forEach((body, n) => {
      const calls = env.backend.callsTo(`/echo/turns-${n}`);
      expect(calls).toHaveLength(1);
      expect(Buffer.compare((calls[0] as { body: Buffer }).body, body)).toBe(0);
    });
  });
});

/** Opens a request with a declared body of `declared` bytes and sends only `sent` of them. */
async function openUpload(url: string, path: string, declared: number, sent: number): Promise<{ socket: Socket; finish(): Promise<string> }> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  await once(socket, "connect");
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.on("error", () => undefined);
  socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${declared}\r\nConnection: close\r\n\r\n`);
  socket.write(Buffer.alloc(sent, 1));
  return {
    socket,
    async finish() {
      socket.write(Buffer.alloc(declared - sent, 1));
      await closed(socket);
      return Buffer.concat(chunks).toString("latin1");
    },
  };
}

describe("the in-flight request body budget (server.maxInflightBodySize)", () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startApp(configFor(uniqueStream("budget"), { server: { maxInflightBodySize: "100KiB" } }));
    await app.app.ready;
  });
  afterAll(async () => {
    await app?.close();
  });

  it("answers 503 with Retry-After while the budget is taken, before reading the body, and accepts again after", async () => {
    const held = await openUpload(app.url, "/echo/budget-held", 80_000, 1_000);
    try {
      // Whenever the proxy has read the held request's head, 80 000 of the 102 400 bytes are taken.
      const refused = await waitFor(
        async () => {
          const res = await request(app.url).post("/echo/budget-refused").set("content-type", "application/octet-stream").send(Buffer.alloc(30_000, 2));
          return res.status === 503 ? res : undefined;
        },
        { what: "a 503 from the budget" },
      );
      expect(refused.headers["content-type"]).toBe("application/problem+json");
      expect(refused.headers["retry-after"]).toBe("1");
      expect(refused.body).toMatchObject({ status: 503, code: "SLOWLANE_OVERLOADED" });
      // A request that fits in what is left still passes.
      expect((await request(app.url).post("/echo/budget-small").send("small")).status).toBe(202);

      const answer = await held.finish();
      expect(answer.slice(0, 12)).toBe("HTTP/1.1 202");
      const again = await request(app.url).post("/echo/budget-again").set("content-type", "application/octet-stream").send(Buffer.alloc(30_000, 2));
      expect(again.status).toBe(202);
    } finally {
      held.socket.destroy();
    }
    expect(env.backend.callsTo("/echo/budget-refused")).toHaveLength(0);
  });
});

describe("server.maxConnections", () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startApp(configFor(uniqueStream("conns"), { server: { maxConnections: 2 } }), "proxy");
    await app.app.ready;
  });
  afterAll(async () => {
    await app?.close();
  });

  /** A keep-alive connection that has been served once (so the server counts it). */
  async function servedConnection(): Promise<Socket> {
    const { hostname, port } = new URL(app.url);
    const socket = connect(Number(port), hostname);
    socket.on("error", () => undefined);
    socket.write(`GET ${JOBS}/not-an-id HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [first] = (await once(socket, "data")) as [Buffer];
    expect(first.toString("latin1").slice(0, 12)).toBe("HTTP/1.1 404");
    return socket;
  }

  it("closes a connection past the limit at once, and takes new ones when one leaves", async () => {
    const held = [await servedConnection(), await servedConnection()];
    try {
      const answer = await exchange(app.url, Buffer.from(`GET ${JOBS}/not-an-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
      expect(answer).toBe("");
      held.pop()?.destroy();
      const served = await waitFor(
        async () => {
          const again = await exchange(app.url, Buffer.from(`GET ${JOBS}/not-an-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
          return again !== "" ? again : undefined;
        },
        { what: "a connection to be taken again" },
      );
      expect(served.slice(0, 12)).toBe("HTTP/1.1 404");
    } finally {
      for (const socket of held) socket.destroy();
    }
  });
});
