/**
 * Callback delivery against a real HTTP receiver on 127.0.0.1 that verifies signatures with the
 * `standardwebhooks` package, as a client's receiver would. The receiver is on a loopback address,
 * so the policy here names 127.0.0.1 literally; reaching it by the name `localhost` must be refused.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:http";
import type { Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCallbackDispatcher, deliverCallback } from "../../src/callbacks/deliver.js";
import type { DeliverCallbackOptions } from "../../src/callbacks/deliver.js";
import { toCallbackEvent } from "../../src/callbacks/payload.js";
import { checkCallbackUrl, compileCallbackPolicy } from "../../src/callbacks/url-policy.js";
import { waitFor } from "../helpers/wait.js";
import { startWebhookReceiver } from "../helpers/webhook-receiver.js";
import type { ReceivedCallback } from "../helpers/webhook-receiver.js";

const SECRET = `whsec_${randomBytes(32).toString("base64")}`;

type Received = ReceivedCallback;

/** path → how the receiver answers; every request is recorded first. */
const ANSWERS: Record<string, (res: ServerResponse) => void> = {
  "/ok": (res) => res.writeHead(204).end(),
  "/fail": (res) => res.writeHead(500, { "content-type": "text/plain" }).end("internal detail at 10.9.8.7"),
  "/busy": (res) => res.writeHead(429, { "retry-after": "7" }).end(),
  "/busy-plain": (res) => res.writeHead(429).end(),
  "/busy-date": (res) => res.writeHead(503, { "retry-after": new Date(Date.now() + 30_000).toUTCString() }).end(),
  "/gone": (res) => res.writeHead(404).end("no such hook"),
  "/redirect": (res) => res.writeHead(302, { location: "/ok" }).end(),
  "/big": (res) => {
    res.writeHead(200, { "content-type": "application/octet-stream" });
    res.end(Buffer.alloc(8 * 1024 * 1024, 1));
  },
  "/reset": (res) => res.socket?.destroy(),
  "/hang": () => {},
};

function startReceiver(received: Received[]): Promise<Server> {
  return startWebhookReceiver(SECRET, received, (path, res) => (ANSWERS[path] ?? ((r: ServerResponse) => r.writeHead(404).end()))(res));
}

describe("deliverCallback", () => {
  const received: Received[] = [];
  const policy = compileCallbackPolicy(["http://127.0.0.1:*/**"]);
  const dispatcher = createCallbackDispatcher(policy);
  let server: Server;
  let base: string;
  const event = toCallbackEvent("completed", { id: "job-1", status: "completed", responseStatus: 200 }, new Date());
  const body = JSON.stringify(event);

  const deliver = (path: string, overrides: Partial<DeliverCallbackOptions> = {}) =>
    deliverCallback({ url: `${base}${path}`, secret: SECRET, deliveryId: "msg_job-1", body, timeoutMs: 5_000, dispatcher, ...overrides });
  const callsTo = (path: string) => received.filter((r) => r.path === path);

  beforeAll(async () => {
    server = await startReceiver(received);
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await dispatcher.close();
    server.closeAllConnections();
    server.close();
    await once(server, "close");
  });

  it("the policy lets the literal receiver address through", async () => {
    const check = await checkCallbackUrl(policy, `${base}/ok`);
    expect(check.ok).toBe(true);
  });

  it("POSTs the event, signed so that the receiver verifies it", async () => {
    expect(await deliver("/ok")).toEqual({ kind: "delivered", status: 204 });
    const [call] = callsTo("/ok");
    expect(call?.verified).toEqual(event);
    expect(call?.body).toBe(body);
    expect(call?.headers["content-type"]).toBe("application/json");
    expect(call?.headers["user-agent"]).toBe("slowlane");
    expect(call?.headers["webhook-id"]).toBe("msg_job-1");
  });

  it("keeps the webhook-id across retries and signs each attempt afresh", async () => {
    await deliver("/ok");
    await deliver("/ok");
    const calls = callsTo("/ok").slice(-2);
    expect(calls.map((c) => c.headers["webhook-id"])).toEqual(["msg_job-1", "msg_job-1"]);
    expect(calls.every((c) => !(c.verified instanceof Error))).toBe(true);
  });

  it("a receiver with another secret cannot verify it", async () => {
    await deliver("/ok");
    const last = callsTo("/ok").at(-1);
    const other = `whsec_${randomBytes(32).toString("base64")}`;
    expect(() => new Webhook(other).verify(last?.body ?? "", last?.headers as Record<string, string>)).toThrow();
  });

  it("retries on a 500, without the receiver's body in the reason", async () => {
    const outcome = await deliver("/fail");
    expect(outcome).toEqual({ kind: "retry", status: 500, reason: `127.0.0.1:${new URL(base).port} answered 500` });
  });

  it("retries on a 429, honouring Retry-After in seconds", async () => {
    expect(await deliver("/busy")).toMatchObject({ kind: "retry", status: 429, retryAfterMs: 7_000 });
  });

  it("retries on a 429 without Retry-After, with no retryAfterMs", async () => {
    const outcome = await deliver("/busy-plain");
    expect(outcome).toMatchObject({ kind: "retry", status: 429 });
    expect(outcome).not.toHaveProperty("retryAfterMs");
  });

  it("honours Retry-After as an HTTP-date on a 503", async () => {
    const outcome = await deliver("/busy-date");
    expect(outcome.kind).toBe("retry");
    const retryAfterMs = outcome.kind === "retry" ? outcome.retryAfterMs : undefined;
    expect(retryAfterMs).toBeGreaterThan(20_000);
    expect(retryAfterMs).toBeLessThanOrEqual(30_000);
  });

  it("rejects on a 404, for good", async () => {
    expect(await deliver("/gone")).toEqual({ kind: "rejected", status: 404, reason: expect.stringContaining("answered 404") });
  });

  it("does not follow a redirect", async () => {
    const before = callsTo("/ok").length;
    const outcome = await deliver("/redirect");
    expect(outcome).toMatchObject({ kind: "rejected", status: 302, reason: expect.stringContaining("redirects are not followed") });
    expect(callsTo("/ok").length).toBe(before);
  });

  it("is delivered on a 2xx with a large body, reading only a little of it", async () => {
    expect(await deliver("/big")).toEqual({ kind: "delivered", status: 200 });
  });

  it("retries when the receiver never answers, after timeoutMs", async () => {
    const started = Date.now();
    const outcome = await deliver("/hang", { timeoutMs: 300 });
    expect(outcome).toEqual({ kind: "retry", reason: `no answer from 127.0.0.1:${new URL(base).port} within 300 ms` });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it("retries when the receiver drops the connection", async () => {
    expect(await deliver("/reset")).toMatchObject({ kind: "retry", reason: expect.stringContaining("closed the connection") });
  });

  it("retries when the connection is refused", async () => {
    const closed = createServer();
    closed.listen(0, "127.0.0.1");
    await once(closed, "listening");
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, "close");
    const outcome = await deliver("/ok", { url: `http://127.0.0.1:${port}/ok` });
    expect(outcome).toEqual({ kind: "retry", reason: `connection refused by 127.0.0.1:${port}` });
  });

  it("refuses at connection time a name that resolves to loopback (DNS rebinding), with or without a dispatcher", async () => {
    const before = received.length;
    const url = `http://localhost:${new URL(base).port}/ok`;
    for (const outcome of [await deliver("/ok", { url }), await deliver("/ok", { url, dispatcher: undefined })]) {
      expect(outcome).toEqual({ kind: "refused", reason: "localhost resolves to a loopback, private or link-local address" });
    }
    expect(received.length).toBe(before);
  });

  it("rejects with the caller's abort reason when the caller aborts (shutdown)", async () => {
    const controller = new AbortController();
    const pending = deliver("/hang", { signal: controller.signal });
    const hangs = callsTo("/hang").length;
    await waitFor(() => callsTo("/hang").length > hangs, { what: "the receiver to get the call" });
    controller.abort(new Error("shutting down"));
    await expect(pending).rejects.toThrow("shutting down");
  });
});
