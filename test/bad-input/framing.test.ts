/**
 * Malformed and hostile HTTP/1.1 sent byte for byte over raw sockets: smuggling attempts, broken
 * framing, invalid heads, odd request targets. slowlane runs as a proxy only (no workers), so an
 * accepted request stays in the stream where it can be counted.
 *
 * Every case checks the answer, then that the process still serves a passthrough request and an
 * async submit, that exactly the expected requests reached the backend (count and paths), and
 * that nothing else was queued.
 */
import request from "supertest";
import { beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { uniqueStream } from "../helpers/slowlane.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";
import { head, sendRaw } from "./raw-http.js";
import type { RawExchange } from "./raw-http.js";

const env = useNatsAndBackend();
const { streamMessages } = useJetStreamInspector(env);
const stream = uniqueStream("framing");
const slowlane = useSlowlane({
  environment: env,
  role: "proxy",
  config: { nats: { stream } },
  routes: [
    { name: "jobs", methods: ["POST", "PUT"], path: "/async/**" },
    { name: "small", methods: ["POST"], path: "/small/**", maxBodySize: "1KiB" },
  ],
});
let port: number;

beforeAll(() => {
  port = Number(new URL(slowlane.url).port);
});

const queuedMessages = () => streamMessages(stream);

let probes = 0;

/**
 * Runs `attack`, then proves the process healthy (a passthrough GET and an async POST on fresh
 * connections) and audits the backend and the stream: `reaches` lists the requests the attack
 * may deliver to the backend ("METHOD url", in order), `queued` how many jobs it may create.
 */
async function audited<T>(
  attack: () => Promise<T>,
  { reaches = [], queued = 0 }: { reaches?: string[]; queued?: number } = {},
): Promise<T> {
  const calls = env.backend.calls.length;
  const messages = await queuedMessages();
  const result = await attack();

  probes += 1;
  const probe = `/healthy/${probes}`;
  const passthrough = await request(slowlane.url).get(probe);
  expect(passthrough.status).toBe(200);
  expect(passthrough.body).toEqual({ method: "GET", url: probe });
  const submit = await request(slowlane.url).post(`/async/healthy-${probes}`).send("still accepting");
  expect(submit.status).toBe(202);

  expect(env.backend.calls.slice(calls).map((c) => `${c.method} ${c.url}`)).toEqual([...reaches, `GET ${probe}`]);
  expect(await queuedMessages()).toBe(messages + queued + 1);
  return result;
}

/** The answer to a refused request: `status`, `Connection: close`, and the connection closed. */
function expectRefused(exchange: RawExchange, status: number): void {
  expect(exchange.timedOut).toBe(false);
  expect(exchange.responses.map((r) => r.status)).toEqual([status]);
  expect(exchange.last?.headers.connection).toBe("close");
  expect(exchange.closed).toBe(true);
}

const H = "Host: slowlane.test";
const TE = "Transfer-Encoding: chunked";
/** The last chunk of a chunked body. */
const LAST = "0\r\n\r\n";
/** What a smuggler hopes the backend reads as a second request. */
const SMUGGLED = head("GET /smuggled HTTP/1.1", H);

describe("framing the parser refuses (400, connection closed, nothing forwarded or queued)", () => {
  it.each<[string, string | Buffer]>([
    ["Content-Length with Transfer-Encoding (async route)", head("POST /async/a HTTP/1.1", H, "Content-Length: 4", TE) + LAST + SMUGGLED],
    ["Content-Length with Transfer-Encoding (passthrough)", head("POST /p HTTP/1.1", H, TE, "Content-Length: 40") + LAST + SMUGGLED],
    ["duplicated Content-Length, same value", head("POST /async/a HTTP/1.1", H, "Content-Length: 5", "Content-Length: 5") + "hello"],
    [
      "duplicated Content-Length, different values",
      head("POST /p HTTP/1.1", H, "Content-Length: 5", "Content-Length: 40") + "hello" + SMUGGLED,
    ],
    ["Content-Length as a list", head("POST /async/a HTTP/1.1", H, "Content-Length: 5, 5") + "hello"],
    ["negative Content-Length", head("POST /async/a HTTP/1.1", H, "Content-Length: -1")],
    ["Content-Length that overflows 64 bits", head("POST /async/a HTTP/1.1", H, "Content-Length: 99999999999999999999999")],
    ["Content-Length that is not a number", head("POST /p HTTP/1.1", H, "Content-Length: 0x10") + "0123456789abcdef"],
    ["Transfer-Encoding: chunked, identity", head("POST /async/a HTTP/1.1", H, "Transfer-Encoding: chunked, identity") + LAST],
    ["Transfer-Encoding: xchunked", head("POST /p HTTP/1.1", H, "Transfer-Encoding: xchunked") + LAST + SMUGGLED],
    ["Transfer-Encoding: chunked twice", head("POST /async/a HTTP/1.1", H, TE, TE) + LAST],
    ["chunked body with a bad chunk size", head("POST /async/a HTTP/1.1", H, TE) + "zz\r\nabc\r\n" + LAST],
    ["chunk size that overflows 64 bits", head("POST /p HTTP/1.1", H, TE) + "fffffffffffffffffff\r\nabc\r\n" + LAST],
    ["chunk longer than its size", head("POST /p HTTP/1.1", H, TE) + "3\r\nabc" + SMUGGLED + "\r\n" + LAST],
    ["obsolete line folding", head("GET /p HTTP/1.1", H, "X-Folded: a", " b")],
    [
      "obsolete line folding hiding Transfer-Encoding",
      head("POST /async/a HTTP/1.1", H, "Transfer-Encoding:", " chunked", "Content-Length: 3") + "abc",
    ],
    ["a space before the colon", head("POST /p HTTP/1.1", H, "Content-Length : 40") + SMUGGLED],
    ["a bare CR inside a header value", head("GET /p HTTP/1.1", H, "X-Evil: a\rTransfer-Encoding: chunked")],
    ["a bare CR ending a line", "GET /p HTTP/1.1\r" + head(H)],
    ["bare LF line endings", `GET /p HTTP/1.1\n${H}\nContent-Length: 3\n\nabc`],
    ["a control character in a header value", head("GET /p HTTP/1.1", H, "X-Evil: a\x01b")],
    ["a NUL byte in a header value", head("GET /p HTTP/1.1", H, "X-Evil: a\x00b")],
    ["a DEL byte in a header value", head("GET /p HTTP/1.1", H, "X-Evil: a\x7fb")],
    ["a space inside a header name", head("GET /p HTTP/1.1", H, "X Evil: a")],
    ["no Host on HTTP/1.1", head("GET /p HTTP/1.1")],
    ["a raw NUL byte in the path", Buffer.from(head("GET /p\x00q HTTP/1.1", H), "latin1")],
    ["a raw 0xff byte in the path", Buffer.from(head("GET /p\xffq HTTP/1.1", H), "latin1")],
    ["a lower-case method", head("get /p HTTP/1.1", H)],
    ["an unknown method", head("SMUGGLE /p HTTP/1.1", H)],
    ["the HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
    ["a request target without a leading slash", head("POST async/a HTTP/1.1", H, "Content-Length: 0")],
    [
      "Content-Length in the trailers of a chunked body",
      head("POST /p HTTP/1.1", H, TE, "Trailer: Content-Length") + "5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n" + SMUGGLED,
    ],
    ["a request line that is not HTTP", "GARBAGE\r\n\r\n"],
  ])("%s", async (_name, raw) => {
    expectRefused(await audited(() => sendRaw(port, raw)), 400);
  });
});

describe("limits of the request head and body", () => {
  it("a header over 32 KiB: 431", async () => {
    expectRefused(await audited(() => sendRaw(port, head("GET /p HTTP/1.1", H, `X-Big: ${"a".repeat(40_000)}`))), 431);
  });

  it("a 10 MB URL: 431 without reading it all", async () => {
    expectRefused(await audited(() => sendRaw(port, head(`GET /${"a".repeat(10_000_000)} HTTP/1.1`, H))), 431);
  });

  it("a chunk-extension flood: 413", async () => {
    const flood = `1;${"ext=value;".repeat(5_000)}\r\nx\r\n0\r\n\r\n`;
    expectRefused(await audited(() => sendRaw(port, head("POST /async/a HTTP/1.1", H, TE) + flood)), 413);
  });

  it("a 10 GB Content-Length on an async route: 413 problem+json at once, nothing queued", async () => {
    const exchange = await audited(() => sendRaw(port, head("POST /async/a HTTP/1.1", H, "Content-Length: 10000000000")));
    expectRefused(exchange, 413);
    expect(exchange.last?.headers["content-type"]).toBe("application/problem+json");
    expect(JSON.parse(exchange.last?.body.toString() ?? "")).toMatchObject({ code: "SLOWLANE_BODY_TOO_LARGE" });
  });

  it.each([
    ["declared by Content-Length", head("POST /small/a HTTP/1.1", H, "Content-Length: 2048") + "x".repeat(2048)],
    ["chunked, no length declared", head("POST /small/a HTTP/1.1", H, TE) + `800\r\n${"x".repeat(2048)}\r\n${LAST}`],
  ])("a body over the route's maxBodySize (1KiB), %s: 413 problem+json, nothing queued", async (_name, raw) => {
    const exchange = await audited(() => sendRaw(port, raw));
    expectRefused(exchange, 413);
    expect(exchange.last?.headers["content-type"]).toBe("application/problem+json");
    expect(JSON.parse(exchange.last?.body.toString() ?? "")).toMatchObject({ status: 413, code: "SLOWLANE_BODY_TOO_LARGE" });
  });

  it("a body of exactly the route's maxBodySize: accepted", async () => {
    const raw = head("POST /small/a HTTP/1.1", H, "Content-Length: 1024") + "x".repeat(1024);
    const exchange = await audited(() => sendRaw(port, raw, { finalResponses: 1 }), { queued: 1 });
    expect(exchange.last?.status).toBe(202);
  });

  // Node keeps 2,000 headers by default and drops the rest, framing included: the upstream would
  // then read the body as a request of its own. (Short repeated headers: the test backend's own
  // head limit is Node's default 16 KiB, and it sees them joined into one.)
  it("3,000 headers, a Content-Length last: forwarded with its body, nothing smuggled", async () => {
    const filler = Array.from({ length: 2_999 }, () => "a: b");
    const calls = env.backend.calls.length;
    const exchange = await audited(
      () => sendRaw(port, head("GET /p HTTP/1.1", H, ...filler, `Content-Length: ${SMUGGLED.length}`) + SMUGGLED, { finalResponses: 1 }),
      { reaches: ["GET /p"] },
    );
    expect(exchange.last?.status).toBe(200);
    expect(env.backend.calls[calls]?.body.toString()).toBe(SMUGGLED);
  });

  it("3,000 headers, Transfer-Encoding last: forwarded with its body, nothing smuggled", async () => {
    const filler = Array.from({ length: 2_999 }, () => "a: b");
    const chunked = `${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`;
    const calls = env.backend.calls.length;
    const exchange = await audited(
      () => sendRaw(port, head("GET /p HTTP/1.1", H, ...filler, TE) + chunked, { finalResponses: 1 }),
      { reaches: ["GET /p"] },
    );
    expect(exchange.last?.status).toBe(200);
    expect(env.backend.calls[calls]?.body.toString()).toBe(SMUGGLED);
  });
});

describe("request targets and Host", () => {
  it("absolute-form on passthrough: forwarded to the upstream as its path, never to the named host", async () => {
    const exchange = await audited(() => sendRaw(port, head("GET http://evil.example/p?q=1 HTTP/1.1", H), { finalResponses: 1 }), {
      reaches: ["GET /p?q=1"],
    });
    expect(exchange.last?.status).toBe(200);
  });

  it("absolute-form on an async route: routed like its path (202, queued), not passed through", async () => {
    const exchange = await audited(
      () => sendRaw(port, head("POST http://evil.example/async/a HTTP/1.1", H, "Content-Length: 2") + "hi", { finalResponses: 1 }),
      { queued: 1 },
    );
    expect(exchange.last?.status).toBe(202);
    expect(exchange.last?.headers.location).toMatch(/^\/_slowlane\/jobs\/[A-Za-z0-9_-]{22}$/);
  });

  it.each([
    ["asterisk-form (OPTIONS *)", head("OPTIONS * HTTP/1.1", H)],
    ["two Host headers", head("POST /async/a HTTP/1.1", H, "Host: other.example", "Content-Length: 0")],
  ])("%s: 400 problem+json", async (_name, raw) => {
    const exchange = await audited(() => sendRaw(port, raw));
    expectRefused(exchange, 400);
    expect(JSON.parse(exchange.last?.body.toString() ?? "")).toMatchObject({ status: 400, code: "SLOWLANE_BAD_REQUEST" });
  });

  it("CONNECT: the connection is closed without a tunnel", async () => {
    const exchange = await audited(() => sendRaw(port, head("CONNECT evil.example:443 HTTP/1.1", "Host: evil.example:443")));
    expect(exchange.closed).toBe(true);
    expect(exchange.responses.filter((r) => r.status < 400)).toEqual([]);
  });

  it("HTTP/1.0 without Host: passed through", async () => {
    const exchange = await audited(() => sendRaw(port, head("GET /p10 HTTP/1.0")), { reaches: ["GET /p10"] });
    expect(exchange.last?.statusLine).toMatch(/^HTTP\/1\.1 200 /);
    expect(exchange.closed).toBe(true);
  });

  it("an unknown expectation: 417, and the connection stays usable", async () => {
    const raw = head("POST /async/a HTTP/1.1", H, "Expect: 200-ok", "Content-Length: 0") + head("GET /after-417 HTTP/1.1", H);
    const exchange = await audited(() => sendRaw(port, raw, { finalResponses: 2 }), { reaches: ["GET /after-417"] });
    expect(exchange.responses.map((r) => r.status)).toEqual([417, 200]);
  });
});

describe("framing slowlane and the backend must agree on", () => {
  it("bytes after a Content-Length body are a second request, answered in order", async () => {
    const exchange = await audited(
      () => sendRaw(port, head("POST /p HTTP/1.1", H, "Content-Length: 5") + "hello" + SMUGGLED, { finalResponses: 2 }),
      { reaches: ["POST /p", "GET /smuggled"] },
    );
    expect(exchange.responses.map((r) => JSON.parse(r.body.toString()))).toEqual([
      { method: "POST", url: "/p" },
      { method: "GET", url: "/smuggled" },
    ]);
  });

  it("a chunked body with trailers: trailers are not headers, the body is exact", async () => {
    const calls = env.backend.calls.length;
    const chunked = "5\r\nhello\r\n0\r\nX-Trailer-Smuggle: evil\r\n\r\n";
    const exchange = await audited(
      () => sendRaw(port, head("POST /p HTTP/1.1", H, TE, "Trailer: X-Trailer-Smuggle") + chunked, { finalResponses: 1 }),
      { reaches: ["POST /p"] },
    );
    expect(exchange.last?.status).toBe(200);
    const call = env.backend.calls[calls];
    expect(call?.body.toString()).toBe("hello");
    expect(call?.headers["x-trailer-smuggle"]).toBeUndefined();
    expect(call?.headers.trailer).toBeUndefined();
  });
});

describe("clients that go away", () => {
  it("disconnecting mid-body on an async route queues nothing", async () => {
    const aborted = () => slowlane.logs.filter((l) => l.msg === "client aborted the request body; nothing queued").length;
    const before = aborted();
    await audited(async () => {
      await sendRaw(port, [head("POST /async/abandoned HTTP/1.1", H, "Content-Length: 100000"), "x".repeat(1_000)], {
        abortAfterWrite: true,
      });
      // The accept path has given up on this request before the audit counts the stream.
      await waitFor(() => aborted() > before, { what: "the aborted body to be noticed" });
    });
  });

  it("disconnecting after 2 MiB of a 4 MiB body (streamed to the Object Store) leaves nothing behind", async () => {
    // Bodies larger than a message are stored as they arrive (claim check); the partial one must go.
    const bodies = `OBJ_${stream}_bodies`;
    const stored = () => streamMessages(bodies);
    const storedBefore = await stored();
    const aborted = () => slowlane.logs.filter((l) => l.msg === "client aborted the request body; nothing queued").length;
    const before = aborted();
    await audited(async () => {
      const parts = [head("POST /async/big HTTP/1.1", H, `Content-Length: ${4 * 1024 * 1024}`), Buffer.alloc(2 * 1024 * 1024, 7)];
      await sendRaw(port, parts, { abortAfterWrite: true });
      await waitFor(() => aborted() > before, { what: "the aborted body to be noticed" });
      await waitFor(async () => (await stored()) === storedBefore, { what: "the partial body to be removed" });
    });
  });

  it("disconnecting mid-body on passthrough delivers nothing to the backend", async () => {
    await audited(() =>
      sendRaw(port, [head("POST /p-abandoned HTTP/1.1", H, "Content-Length: 100000"), "x".repeat(1_000)], { abortAfterWrite: true }),
    );
  });
});
