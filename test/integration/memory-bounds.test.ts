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
