/**
 * Clients that are too slow, or that stop reading: the server's head and request timeouts (408)
 * and a request that breaks while an earlier answer is still streaming.
 *
 * The real limits are 30 s and 5 min; this file starts the proxy with short ones (and a short
 * interval for Node's timeout checks). Tests wait for answers, never assert on time.
 */
import { once } from "node:events";
import { connect } from "node:net";
import request from "supertest";
import { beforeAll, describe, expect, it } from "vitest";
import { SERVER_LIMITS } from "../../src/proxy/server.js";
import { binaryPattern } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";
import { head, parseResponses, sendRaw } from "./raw-http.js";

const env = useNatsAndBackend();
const { streamMessages } = useJetStreamInspector(env);
const slowlane = useSlowlane({
  environment: env,
  role: "proxy",
  stream: "slow",
  serverLimits: { ...SERVER_LIMITS, headersTimeoutMs: 300, requestTimeoutMs: 1_000, connectionsCheckingIntervalMs: 50 },
  routes: [{ name: "jobs", methods: ["POST"], path: "/async/**" }],
});
let url: string;
let port: number;

beforeAll(() => {
  url = slowlane.url;
  port = Number(new URL(url).port);
});

const queuedMessages = () => streamMessages(slowlane.stream);

let probes = 0;

/** Runs `attack`, proves the server still serves both paths, and that only `reaches` got to the backend. */
async function audited<T>(attack: () => Promise<T>, reaches: string[] = []): Promise<T> {
  const calls = env.backend.calls.length;
  const messages = await queuedMessages();
  const result = await attack();
  probes += 1;
  const probe = `/healthy/${probes}`;
  expect((await request(url).get(probe)).status).toBe(200);
  expect((await request(url).post(`/async/healthy-${probes}`).send("still accepting")).status).toBe(202);
  expect(env.backend.calls.slice(calls).map((c) => `${c.method} ${c.url}`)).toEqual([...reaches, `GET ${probe}`]);
  expect(await queuedMessages()).toBe(messages + 1);
  return result;
}

/** One part per byte: a client trickling its request. */
function trickle(text: string): string[] {
  return [...text];
}

describe("slow clients get 408 and nothing is forwarded or queued", () => {
  it("a request head sent a byte at a time", async () => {
    const slowHead = head("POST /async/slow-head HTTP/1.1", "Host: x", `X-Long: ${"a".repeat(500)}`, "Content-Length: 0");
    const exchange = await audited(() => sendRaw(port, trickle(slowHead), { gapMs: 20 }));
    expect(exchange.responses.map((r) => r.statusLine)).toEqual(["HTTP/1.1 408 Request Timeout"]);
    expect(exchange.closed).toBe(true);
  });

  it("a connection that never sends a byte", async () => {
    const exchange = await audited(() => sendRaw(port, [], { idleMs: 10_000 }));
    expect(exchange.responses.map((r) => r.statusLine)).toEqual(["HTTP/1.1 408 Request Timeout"]);
    expect(exchange.closed).toBe(true);
  });

  it.each([
    ["an async route", "/async/slow-body"],
    ["passthrough", "/slow-body-pass"],
  ])("a body sent a byte at a time on %s", async (_name, path) => {
    const parts = [head(`POST ${path} HTTP/1.1`, "Host: x", "Content-Length: 1000"), ...trickle("x".repeat(1_000))];
    const exchange = await audited(() => sendRaw(port, parts, { gapMs: 20 }));
    expect(exchange.responses.map((r) => r.status)).toEqual([408]);
    expect(exchange.closed).toBe(true);
  });
});

describe("a client that stops reading, then sends garbage", () => {
  it("gets no error answer written into the body it is still receiving", async () => {
    const size = 32 * 1024 * 1024;
    const malformed = () => slowlane.logs.filter((l) => l.msg === "malformed request from a client").length;
    const before = malformed();
    const raw = await audited(async () => {
      const socket = connect(port, "127.0.0.1");
      const chunks: Buffer[] = [];
      const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
      socket.on("error", () => undefined);
      const headSeen = new Promise<void>((resolve) => {
        socket.on("data", (d: Buffer) => {
          chunks.push(d);
          if (Buffer.concat(chunks).includes("\r\n\r\n")) resolve();
        });
      });
      await once(socket, "connect");
      socket.write(head(`GET /binary?size=${size} HTTP/1.1`, "Host: x"));
      await headSeen;
      // Stop reading: the 32 MiB answer backs up in slowlane, unfinished, while the next request breaks.
      socket.pause();
      socket.write("GARBAGE\r\n\r\n");
      await waitFor(() => malformed() > before, { what: "the garbage to be refused" });
      socket.resume();
      await closed;
      return Buffer.concat(chunks);
    }, [`GET /binary?size=${size}`]);
    const [answer] = parseResponses(raw);
    expect(answer?.status ?? Number(/^HTTP\/1\.1 (\d+)/.exec(raw.toString("latin1", 0, 20))?.[1])).toBe(201);
    // Whatever arrived after the head is a prefix of the backend's bytes, and nothing else.
    const body = raw.subarray(raw.indexOf("\r\n\r\n") + 4);
    expect(body.byteLength).toBeLessThan(size);
    expect(body.includes("HTTP/1.1 400")).toBe(false);
    expect(Buffer.compare(body, binaryPattern(size).subarray(0, body.byteLength))).toBe(0);
  });
});
