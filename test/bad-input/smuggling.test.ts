/**
 * Request smuggling through passthrough, judged where it matters: on the backend's socket. The
 * backend here is a raw TCP server with a strict parser of its own (`raw-backend.ts`), so the test
 * sees the framing slowlane actually wrote, not what a lenient HTTP server made of it.
 *
 * The invariant: the backend receives exactly the requests the client sent, each with its own
 * body, framed once (Content-Length or chunked, never both, never a length that disagrees with the
 * bytes), whatever the method. A body that says "GET /internal-admin" must arrive as a body.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startNatsServer } from "../helpers/nats.js";
import type { NatsServer } from "../helpers/nats.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { startRawBackend } from "./raw-backend.js";
import type { RawBackend, ReceivedRequest } from "./raw-backend.js";
import { head, sendRaw } from "./raw-http.js";

let nats: NatsServer;
let backend: RawBackend;
let slowlane: TestApp;
let port: number;

beforeAll(async () => {
  [nats, backend] = await Promise.all([startNatsServer(), startRawBackend()]);
  slowlane = await startApp(
    makeConfig({
      listen: "127.0.0.1:0",
      upstream: backend.url,
      nats: { servers: nats.url, stream: uniqueStream("smuggling") },
      routes: [{ name: "jobs", methods: ["POST"], path: "/async/**" }],
    }),
    "proxy",
  );
  port = Number(new URL(slowlane.url).port);
});

afterAll(async () => {
  await slowlane?.close();
  await Promise.all([backend?.close(), nats?.close()]);
});

let seen = 0;
beforeEach(() => {
  seen = backend.requests.length;
});

/**
 * The requests the backend parsed since the test began, as "METHOD target body", sorted: Node
 * serves pipelined requests concurrently (answering in order), so they may reach the backend in
 * any order, over several connections.
 */
function reached(): string[] {
  return backend.requests
    .slice(seen)
    .map((r) => `${r.method} ${r.target} ${r.body.toString("latin1")}`)
    .sort();
}

/** A request's framing is the one undici writes: one header, matching the bytes that followed. */
function expectFramedOnce(request: ReceivedRequest | undefined, bodyBytes: number): void {
  const lengths = backend.header(request as ReceivedRequest, "content-length");
  const codings = backend.header(request as ReceivedRequest, "transfer-encoding");
  expect(lengths.length + codings.length).toBeLessThanOrEqual(1);
  if (bodyBytes === 0) expect(lengths.filter((v) => v !== "0")).toEqual([]);
  else if (request?.framing === "content-length") expect(lengths).toEqual([String(bodyBytes)]);
  else expect(request?.framing).toBe("chunked");
}

const H = "Host: slowlane.test";
const TE = "Transfer-Encoding: chunked";
/** What a smuggler hopes the backend reads as a request of its own. */
const PAYLOAD = "GET /internal-admin HTTP/1.1\r\nHost: backend\r\n\r\n";
const chunked = (body: string): string => `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`;
/** Every method Node's parser takes that a client may send a body with, an extension method included. */
const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"];

describe("a chunked body carrying a request, on every method", () => {
  it.each(METHODS)("%s: forwarded as one request whose body is the payload", async (method) => {
    const raw = head(`${method} /p-${method.toLowerCase()} HTTP/1.1`, H, TE) + chunked(PAYLOAD);
    const exchange = await sendRaw(port, raw, { finalResponses: 1, headRequests: [method === "HEAD"] });
    expect(exchange.last?.status).toBe(200);
    expect(reached()).toEqual([`${method} /p-${method.toLowerCase()} ${PAYLOAD}`]);
    expectFramedOnce(backend.requests[seen], Buffer.byteLength(PAYLOAD));
    expect(backend.problems).toEqual([]);
  });
});

describe("a Content-Length body carrying a request, on every method", () => {
  it.each(METHODS)("%s: forwarded with its length, the payload as its body", async (method) => {
    const raw = head(`${method} /cl-${method.toLowerCase()} HTTP/1.1`, H, `Content-Length: ${PAYLOAD.length}`) + PAYLOAD;
    const exchange = await sendRaw(port, raw, { finalResponses: 1, headRequests: [method === "HEAD"] });
    expect(exchange.last?.status).toBe(200);
    expect(reached()).toEqual([`${method} /cl-${method.toLowerCase()} ${PAYLOAD}`]);
    expectFramedOnce(backend.requests[seen], PAYLOAD.length);
    expect(backend.problems).toEqual([]);
  });
});

describe("an empty chunked body", () => {
  it.each(["DELETE", "OPTIONS", "GET", "POST"])("%s: forwarded without a body, the next request intact", async (method) => {
    const raw = head(`${method} /empty HTTP/1.1`, H, TE) + "0\r\n\r\n" + head("GET /after-empty HTTP/1.1", H);
    const exchange = await sendRaw(port, raw, { finalResponses: 2 });
    expect(exchange.responses.map((r) => r.status)).toEqual([200, 200]);
    expect(reached()).toEqual([`${method} /empty `, "GET /after-empty "].sort());
    expectFramedOnce(backend.requests.slice(seen).find((r) => r.target === "/empty"), 0);
    expect(backend.problems).toEqual([]);
  });
});

describe("a zero Content-Length written with leading zeros", () => {
  it.each(["POST", "DELETE"])("%s: forwarded without a body, the next request intact", async (method) => {
    const raw = head(`${method} /zeros HTTP/1.1`, H, "Content-Length: 000") + head("GET /after-zeros HTTP/1.1", H);
    const exchange = await sendRaw(port, raw, { finalResponses: 2 });
    expect(exchange.responses.map((r) => r.status)).toEqual([200, 200]);
    expect(reached()).toEqual([`${method} /zeros `, "GET /after-zeros "].sort());
    expect(backend.problems).toEqual([]);
  });
});

describe("Content-Length and Transfer-Encoding together", () => {
  // Node's parser refuses the pair (RFC 9112 §6.1 lets a server do so): nothing may reach the backend.
  it.each(["DELETE", "OPTIONS", "GET", "POST"])("%s: 400, connection closed, nothing forwarded", async (method) => {
    const raw = head(`${method} /both HTTP/1.1`, H, `Content-Length: ${PAYLOAD.length}`, TE) + chunked(PAYLOAD);
    const exchange = await sendRaw(port, raw);
    expect(exchange.responses.map((r) => r.status)).toEqual([400]);
    expect(exchange.closed).toBe(true);
    expect(reached()).toEqual([]);
  });
});

describe("a transfer coding besides chunked", () => {
  // Node's parser takes `gzip, chunked` and removes only the chunked coding; forwarding the bytes
  // without the gzip coding would change the body's meaning.
  it("gzip, chunked: 400 problem+json, nothing forwarded", async () => {
    const raw = head("POST /gzip HTTP/1.1", H, "Transfer-Encoding: gzip, chunked") + chunked(PAYLOAD);
    const exchange = await sendRaw(port, raw);
    expect(exchange.responses.map((r) => r.status)).toEqual([400]);
    expect(exchange.last?.headers["content-type"]).toBe("application/problem+json");
    expect(exchange.closed).toBe(true);
    expect(reached()).toEqual([]);
  });
});

describe("pipelined requests on one client connection", () => {
  it("each reaches the backend as itself, each answer in order", async () => {
    const raw =
      head("DELETE /pipe-1 HTTP/1.1", H, TE) +
      chunked(PAYLOAD) +
      head("OPTIONS /pipe-2 HTTP/1.1", H, TE) +
      chunked(PAYLOAD) +
      head("GET /pipe-3 HTTP/1.1", H) +
      head("POST /pipe-4 HTTP/1.1", H, `Content-Length: ${PAYLOAD.length}`) +
      PAYLOAD +
      head("PATCH /pipe-5 HTTP/1.1", H, TE) +
      chunked(PAYLOAD);
    const exchange = await sendRaw(port, raw, { finalResponses: 5 });
    expect(exchange.responses.map((r) => (JSON.parse(r.body.toString()) as { target: string }).target)).toEqual([
      "/pipe-1",
      "/pipe-2",
      "/pipe-3",
      "/pipe-4",
      "/pipe-5",
    ]);
    expect(reached()).toEqual(
      [
        `DELETE /pipe-1 ${PAYLOAD}`,
        `OPTIONS /pipe-2 ${PAYLOAD}`,
        "GET /pipe-3 ",
        `POST /pipe-4 ${PAYLOAD}`,
        `PATCH /pipe-5 ${PAYLOAD}`,
      ].sort(),
    );
    expect(backend.problems).toEqual([]);
  });

  it("a body split across many small chunks arrives whole", async () => {
    const pieces = PAYLOAD.match(/.{1,5}/gs) ?? [];
    const body = pieces.map((p) => `${p.length.toString(16)}\r\n${p}\r\n`).join("") + "0\r\n\r\n";
    const exchange = await sendRaw(port, [head("DELETE /split HTTP/1.1", H, TE), body, head("GET /after-split HTTP/1.1", H)], {
      finalResponses: 2,
      gapMs: 20,
    });
    expect(exchange.responses.map((r) => r.status)).toEqual([200, 200]);
    expect(reached()).toEqual([`DELETE /split ${PAYLOAD}`, "GET /after-split "].sort());
    expect(backend.problems).toEqual([]);
  });
});

describe("what the backend never sees", () => {
  it("no request it was not sent as one, no ambiguous framing, no client framing header passed on", () => {
    // Run last in the file: everything above went through the same backend.
    expect(backend.problems).toEqual([]);
    expect(backend.requests.filter((r) => r.target === "/internal-admin")).toEqual([]);
    for (const request of backend.requests) {
      const framing = [...backend.header(request, "content-length"), ...backend.header(request, "transfer-encoding")];
      expect(framing.length, `${request.method} ${request.target}`).toBeLessThanOrEqual(1);
    }
  });
});
