/**
 * Node's HTTP server limits, set on purpose and documented in the README: oversized heads are
 * 431, framing the parser refuses is 400, and the process keeps serving afterwards.
 */
import { connect } from "node:net";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";

const env = useNatsAndBackend();
let slowlane: TestApp;

beforeAll(async () => {
  slowlane = await startApp(
    makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream: uniqueStream("limits") },
      routes: [{ name: "jobs", methods: ["POST"], path: "/async" }],
    }),
    "proxy",
  );
});
afterAll(async () => {
  await slowlane?.close();
});

/** Sends raw bytes and returns the status line of the answer. */
async function statusLine(raw: string): Promise<string> {
  const { port } = new URL(slowlane.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1", () => socket.write(raw));
    let data = "";
    socket.on("data", (d: Buffer) => (data += d.toString("latin1")));
    socket.on("close", () => resolve(data.split("\r\n")[0] ?? ""));
    socket.on("error", reject);
  });
}

describe("HTTP server limits", () => {
  it.each([
    ["a request head over 32 KiB", `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(40_000)}\r\n\r\n`, "HTTP/1.1 431 Request Header Fields Too Large"],
    ["Content-Length with Transfer-Encoding", "POST /async HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"],
    ["a request line that is not HTTP", "GARBAGE\r\n\r\n", "HTTP/1.1 400 Bad Request"],
  ])("%s is refused and nothing reaches the backend", async (_name, raw, expected) => {
    const calls = env.backend.calls.length;
    expect(await statusLine(raw)).toBe(expected);
    expect(env.backend.calls.length).toBe(calls);
    const healthy = await request(slowlane.url).get("/still-alive");
    expect(healthy.status).toBe(200);
  });
});
