/**
 * Requests that are well-formed but carry things that must not travel on: hop-by-hop headers,
 * headers named in Connection, Trailer, Expect, bad Idempotency-Keys. slowlane runs with its
 * workers, so what the backend finally receives is checked on both paths, passthrough and async.
 * Every case ends with the same audit: exactly these requests reached the backend, and the
 * process still serves passthrough and async requests.
 */
import { request as httpRequest } from "node:http";
import request from "supertest";
import { beforeAll, describe, expect, it } from "vitest";
import type { BackendCall } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { head, sendRaw } from "./raw-http.js";

const env = useNatsAndBackend();
const slowlane = useSlowlane({
  environment: env,
  stream: "forwarding",
  config: { nats: { ackWait: "2s" }, defaults: { attempts: 1, retryAfter: "1s" } },
  routes: [{ name: "echo", methods: ["GET", "POST", "PUT"], path: "/echo/async/**" }],
});
let port: number;

beforeAll(() => {
  port = Number(new URL(slowlane.url).port);
});

/** Waits for a job to finish and returns its status body. */
const finished = async (id: string) => (await slowlane.waitFinal(id)).body as Record<string, unknown>;

let probes = 0;

/**
 * Runs `attack`, then proves the process healthy (passthrough GET, async submit run to the end)
 * and checks that the backend received exactly `reaches` ("METHOD url", any order) besides the
 * two probes. Returns the attack's result and the backend calls it made.
 */
async function audited<T>(attack: () => Promise<T>, reaches: string[] = []): Promise<{ result: T; calls: BackendCall[] }> {
  const start = env.backend.calls.length;
  const result = await attack();

  probes += 1;
  const probe = `/healthy/${probes}`;
  const passthrough = await request(slowlane.url).get(probe);
  expect(passthrough.status).toBe(200);
  const submit = await request(slowlane.url).post(`/echo/async/healthy-${probes}`).send("still accepting");
  expect(submit.status).toBe(202);
  expect(await finished(submit.body.id as string)).toMatchObject({ status: "completed", responseStatus: 200 });

  const calls = env.backend.calls.slice(start);
  const seen = calls.map((c) => `${c.method} ${c.url}`);
  expect(seen.sort()).toEqual([...reaches, `GET ${probe}`, `POST /echo/async/healthy-${probes}`].sort());
  return { result, calls: calls.filter((c) => reaches.includes(`${c.method} ${c.url}`)) };
}

/**
 * Sends one request over a raw socket (Node's client refuses some of these headers, `Trailer`
 * with a Content-Length for one) and returns the answer; an async one is waited for to the end.
 */
async function rawRequest(method: string, path: string, headers: Record<string, string>, body = ""): Promise<number> {
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}`);
  const raw = head(`${method} ${path} HTTP/1.1`, "Host: slowlane.test", ...lines, `Content-Length: ${Buffer.byteLength(body)}`) + body;
  const answer = (await sendRaw(port, raw, { finalResponses: 1 })).last;
  if (answer?.status === 202) {
    const { id } = JSON.parse(answer.body.toString()) as { id: string };
    expect(await finished(id)).toMatchObject({ status: "completed", responseStatus: 200 });
  }
  return answer?.status ?? 0;
}

const HOP_BY_HOP = {
  connection: "keep-alive, X-Secret-Hop, X-Other-Hop",
  "x-secret-hop": "for the first hop only",
  "x-other-hop": "also",
  "keep-alive": "timeout=5",
  "proxy-connection": "keep-alive",
  "proxy-authorization": "Basic c2xvd2xhbmU6c2VjcmV0",
  te: "trailers",
  trailer: "X-Checksum",
  "x-kept": "end-to-end",
};
const DROPPED = ["x-secret-hop", "x-other-hop", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer"];

function expectNoHopByHop(call: BackendCall | undefined): void {
  expect(call?.headers["x-kept"]).toBe("end-to-end");
  for (const name of DROPPED) expect(call?.headers[name], name).toBeUndefined();
  expect(call?.headers.connection ?? "").not.toMatch(/hop/i);
}

describe("hop-by-hop headers and those named in Connection never reach the backend", () => {
  it("on passthrough", async () => {
    const { calls } = await audited(async () => {
      expect(await rawRequest("POST", "/echo/pass", HOP_BY_HOP, "body")).toBe(200);
    }, ["POST /echo/pass"]);
    expectNoHopByHop(calls[0]);
    expect(calls[0]?.body.toString()).toBe("body");
  });

  it("on the async path", async () => {
    const { calls } = await audited(async () => {
      expect(await rawRequest("POST", "/echo/async/hop", HOP_BY_HOP, "body")).toBe(202);
    }, ["POST /echo/async/hop"]);
    expectNoHopByHop(calls[0]);
    expect(calls[0]?.body.toString()).toBe("body");
  });

  it.each([
    ["Content-Length", "Content-Length: 35", "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"],
    ["Transfer-Encoding", "Transfer-Encoding: chunked", "23\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n"],
  ])("a GET naming %s in Connection keeps its body framed (passthrough)", async (name, framing, body) => {
    const { calls } = await audited(async () => {
      const raw = head("GET /echo/named-framing HTTP/1.1", "Host: x", `Connection: ${name}`, framing) + body;
      const exchange = await sendRaw(port, raw, { finalResponses: 1 });
      expect(exchange.last?.status).toBe(200);
    }, ["GET /echo/named-framing"]);
    expect(calls[0]?.body.toString()).toBe("GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
  });
});

describe("Trailer on a GET", () => {
  it("passthrough: answered, the Trailer header not forwarded", async () => {
    const { calls } = await audited(async () => {
      expect(await rawRequest("GET", "/echo/trailer", { Trailer: "X-Checksum" })).toBe(200);
    }, ["GET /echo/trailer"]);
    expect(calls[0]?.headers.trailer).toBeUndefined();
  });

  it("async: queued and replayed without it", async () => {
    const { calls } = await audited(async () => {
      expect(await rawRequest("GET", "/echo/async/trailer", { Trailer: "X-Checksum" })).toBe(202);
    }, ["GET /echo/async/trailer"]);
    expect(calls[0]?.headers.trailer).toBeUndefined();
    expect(calls[0]?.body.byteLength).toBe(0);
  });
});

/** A request with `Expect: 100-continue` whose body is sent only once the 100 arrives. */
async function expectContinue(path: string, body: string): Promise<{ continued: boolean; status: number; text: string }> {
  return new Promise((resolve, reject) => {
    let continued = false;
    const req = httpRequest(`${slowlane.url}${path}`, {
      method: "POST",
      headers: { expect: "100-continue", "content-type": "text/plain", "content-length": Buffer.byteLength(body) },
    });
    req.on("continue", () => {
      continued = true;
      req.end(body);
    });
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => resolve({ continued, status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
  });
}

describe("Expect: 100-continue", () => {
  it("async route: 100, then 202; the job reaches the backend with its body and without Expect", async () => {
    const { calls } = await audited(async () => {
      const answer = await expectContinue("/echo/async/expect", "sent after 100");
      expect(answer).toMatchObject({ continued: true, status: 202 });
      const id = (JSON.parse(answer.text) as { id: string }).id;
      expect(await finished(id)).toMatchObject({ status: "completed", responseStatus: 200 });
    }, ["POST /echo/async/expect"]);
    expect(calls[0]?.body.toString()).toBe("sent after 100");
    expect(calls[0]?.headers.expect).toBeUndefined();
  });

  it("passthrough: 100, then the backend's answer to the whole body", async () => {
    const { calls } = await audited(async () => {
      const answer = await expectContinue("/echo/expect-pass", "sent after 100");
      expect(answer).toMatchObject({ continued: true, status: 200 });
    }, ["POST /echo/expect-pass"]);
    expect(calls[0]?.body.toString()).toBe("sent after 100");
  });
});

describe("Idempotency-Key on an async route", () => {
  const withKey = (key: string): Buffer =>
    Buffer.from(head("POST /echo/async/idem HTTP/1.1", "Host: x", `Idempotency-Key: ${key}`, "Content-Length: 0"), "latin1");
  it.each([
    ["empty", withKey("")],
    ["256 characters", withKey("k".repeat(256))],
    ["not ASCII", withKey("cl\xe9")],
  ])("%s: 400 problem+json, nothing queued", async (_name, raw) => {
    const accepted = slowlane.logs.filter((l) => l.msg === "job accepted").length;
    await audited(async () => {
      const exchange = await sendRaw(port, raw, { finalResponses: 1 });
      expect(exchange.last?.status).toBe(400);
      expect(exchange.last?.headers["content-type"]).toBe("application/problem+json");
      expect(JSON.parse(exchange.last?.body.toString() ?? "")).toMatchObject({ code: "SLOWLANE_BAD_REQUEST" });
    });
    // The probe's submit is the only job accepted since.
    expect(slowlane.logs.filter((l) => l.msg === "job accepted").length).toBe(accepted + 1);
  });
});
