/**
 * Signed completion callbacks end to end: `X-Callback-Url` checked at accept, one delivery queued in
 * JetStream at the final transition, delivered by a worker to a real receiver that verifies it with
 * the `standardwebhooks` package, retried after a 500, given up after the route's attempts, kept
 * across a worker restart, and shown in the status JSON.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Config } from "../../src/config/index.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { JOBS, uniqueTag } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";
import { startWebhookReceiver } from "../helpers/webhook-receiver.js";
import type { ReceivedCallback } from "../helpers/webhook-receiver.js";

const SECRET = `whsec_${randomBytes(32).toString("base64")}`;

type Received = ReceivedCallback;

const env = useNatsAndBackend();
const stream = uniqueStream("hooks");
const received: Received[] = [];
/** Per path: how many calls answer 500 (or 503 with Retry-After: 1 for /later) before 204. */
const failFirst = new Map<string, number>();
let receiver: Server;
let hooks: string;
let config: Config;
let slowlane: TestApp;
let nc: NatsConnection;

function startReceiver(): Promise<Server> {
  return startWebhookReceiver(SECRET, received, (path, res) => {
    const left = failFirst.get(path) ?? 0;
    if (path.startsWith("/down")) res.writeHead(500).end("no");
    else if (left > 0) {
      failFirst.set(path, left - 1);
      if (path.startsWith("/later")) res.writeHead(503, { "retry-after": "1" }).end();
      else res.writeHead(500).end("try again");
    } else res.writeHead(204).end();
  });
}

beforeAll(async () => {
  receiver = await startReceiver();
  hooks = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  const dir = mkdtempSync(join(tmpdir(), "slowlane-hooks-"));
  const secretFile = join(dir, "webhook.secret");
  writeFileSync(secretFile, `${SECRET}\n`);
  const callbacks = { allow: ["http://127.0.0.1:*/**", "http://localhost:*/**"], secretFile };
  const backoff = { initial: "100ms", factor: 1, max: "5s", jitter: false };
  config = makeConfig({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "5s" },
    defaults: { timeout: "20s", ttl: "5m", attempts: 3, concurrency: 8, retryAfter: "1s", backoff },
    routes: [
      { name: "hooked", methods: ["POST"], path: "/slow", callbacks },
      { name: "twice", methods: ["POST"], path: "/echo/**", callbacks, attempts: 2 },
      { name: "hang", methods: ["POST"], path: "/hang", callbacks },
      { name: "nohooks", methods: ["POST"], path: "/plain/**" },
    ],
  });
  slowlane = await startApp(config);
  await slowlane.app.ready;
  nc = await connect({ servers: env.nats.url });
});

afterAll(async () => {
  await nc?.close();
  await slowlane?.close();
  await new Promise<void>((resolve) => receiver?.close(() => resolve()));
});

async function submit(path: string, callbackUrl: string): Promise<string> {
  const res = await request(slowlane.url).post(path).set("x-callback-url", callbackUrl).send("{}");
  expect(res.status).toBe(202);
  return res.body.id as string;
}

const callsTo = (path: string) => received.filter((r) => r.path === path);
const callbackOf = async (id: string) => (await request(slowlane.url).get(`${JOBS}/${id}`).redirects(0)).body.callback as Record<string, unknown> | undefined;

async function lastSeq(): Promise<number> {
  return (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq;
}

describe("a delivered callback", () => {
  it("POSTs the Standard Webhooks event with the status JSON, verified by the standardwebhooks package", async () => {
    const tag = uniqueTag("ok");
    const id = await submit(`/slow?ms=0&tag=${tag}`, `${hooks}/ok/${tag}#fragment`);
    expect(await callbackOf(id)).toEqual({ status: "pending", attempts: 0 });
    await waitFor(() => callsTo(`/ok/${tag}`).length === 1, { what: "the callback" });
    const [call] = callsTo(`/ok/${tag}`);
    expect(call?.verified).not.toBeInstanceOf(Error);
    const event = JSON.parse(call?.body ?? "") as { type: string; timestamp: string; data: Record<string, unknown> };
    expect(event.type).toBe("job.completed");
    expect(event.timestamp).toBe(event.data.updatedAt);
    expect(event.data).toMatchObject({ id, status: "completed", responseStatus: 200, links: { self: `${JOBS}/${id}`, result: `${JOBS}/${id}/result` } });
    expect(call?.headers["webhook-id"]).toMatch(new RegExp(`^job_${id}_\\d+$`));
    expect(call?.headers["content-type"]).toBe("application/json");

    await waitFor(async () => (await callbackOf(id))?.status === "delivered", { what: "the status JSON to show the delivery" });
    expect(await callbackOf(id)).toEqual({ status: "delivered", attempts: 1 });
    // The header is slowlane's: the backend never sees it.
    expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)[0]?.headers["x-callback-url"]).toBeUndefined();
    const metrics = await (await fetch(`${slowlane.app.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/slowlane_callback_deliveries_total\{route="hooked",outcome="delivered"\} [1-9]/);
  });

  it("is retried after a 500 with the same webhook-id, and the status JSON counts the attempts", async () => {
    const path = `/flaky/${uniqueTag("flaky")}`;
    failFirst.set(path, 1);
    const id = await submit("/slow?ms=0", `${hooks}${path}`);
    await waitFor(async () => (await callbackOf(id))?.status === "delivered", { what: "the delivery" });
    const calls = callsTo(path);
    expect(calls).toHaveLength(2);
    for (const call of calls) expect(call.verified).not.toBeInstanceOf(Error);
    expect(calls[0]?.headers["webhook-id"]).toBe(calls[1]?.headers["webhook-id"]);
    expect(calls[0]?.body).toBe(calls[1]?.body);
    expect(await callbackOf(id)).toMatchObject({ status: "delivered", attempts: 2 });
  });

  it("is given up after the route's attempts, with the last error in the status JSON", async () => {
    const path = `/down/${uniqueTag("down")}`;
    const id = await submit("/echo/give-up", `${hooks}${path}`);
    await waitFor(async () => (await callbackOf(id))?.status === "failed", { what: "the callback to be given up" });
    expect(callsTo(path)).toHaveLength(2);
    expect(await callbackOf(id)).toEqual({ status: "failed", attempts: 2, lastError: `${new URL(hooks).host} answered 500` });
  });

  it("tells of a canceled job (job.canceled), queued by the proxy that canceled it", async () => {
    const tag = uniqueTag("cancel");
    const id = await submit("/hang", `${hooks}/ok/${tag}`);
    await waitFor(async () => (await request(slowlane.url).get(`${JOBS}/${id}`)).body.status === "running", { what: "the job to run" });
    expect((await request(slowlane.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await waitFor(() => callsTo(`/ok/${tag}`).length === 1, { what: "the callback" });
    expect(JSON.parse(callsTo(`/ok/${tag}`)[0]?.body ?? "")).toMatchObject({ type: "job.canceled", data: { id, status: "canceled" } });
  });

  it("survives a worker restart: kept in JetStream and delivered by the next worker", async () => {
    const path = `/later/${uniqueTag("later")}`;
    failFirst.set(path, 1);
    const id = await submit("/slow?ms=0", `${hooks}${path}`);
    await waitFor(() => callsTo(path).length === 1, { what: "the first attempt" });
    await slowlane.close();
    expect(callsTo(path)).toHaveLength(1);
    slowlane = await startApp(config);
    await slowlane.app.ready;
    await waitFor(async () => (await callbackOf(id))?.status === "delivered", { what: "the delivery after the restart" });
    expect(callsTo(path)).toHaveLength(2);
    expect(callsTo(path)[1]?.verified).not.toBeInstanceOf(Error);
  });
});

describe("X-Callback-Url refused at accept: 400 problem+json, nothing queued", () => {
  async function refused(path: string, callbackUrl: string): Promise<string> {
    const before = await lastSeq();
    const res = await request(slowlane.url).post(path).set("x-callback-url", callbackUrl).send("{}");
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toBe("application/problem+json");
    expect(res.body.code).toBe("SLOWLANE_BAD_REQUEST");
    expect(await lastSeq()).toBe(before);
    return res.body.detail as string;
  }

  it("refuses a URL outside the route's allow list", async () => {
    expect(await refused("/slow?ms=0", "https://hooks.example.com/done")).toMatch(/matches none of this route's allowed patterns/);
  });

  it("refuses a host that resolves to a loopback address unless a pattern names the address", async () => {
    const port = new URL(hooks).port;
    expect(await refused("/slow?ms=0", `http://localhost:${port}/ok`)).toMatch(/localhost resolves to a loopback, private or link-local address/);
  });

  it("refuses what is not http(s), and any X-Callback-Url on a route without callbacks", async () => {
    expect(await refused("/slow?ms=0", "ftp://127.0.0.1/x")).toMatch(/http or https/);
    expect(await refused("/plain/x", `${hooks}/ok`)).toMatch(/takes no callbacks/);
  });
});
