/**
 * Learning that a job is done without polling: long-poll (`Prefer: wait=N`), Server-Sent Events (an
 * `eventsource` client), WebSocket (a `ws` client) on the status URL, completion events on NATS,
 * and the status JSON's `links`, `estimatedCompletion` and estimate-based `Retry-After`.
 *
 * The proxy runs alone; each test starts a worker when it wants the job to move, so that a client
 * connected first sees `queued`, then `running`, then `completed`.
 */
import { request as httpRequest } from "node:http";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { EventSource } from "eventsource";
import request from "supertest";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import type { Config } from "../../src/config/index.js";
import { createJobWatch } from "../../src/proxy/job-watch.js";
import { createJobStore } from "../../src/jobs/store.js";
import { createLogger } from "../../src/log.js";
import { provision } from "../../src/nats/provision.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { JOBS, uniqueTag, waitFinal } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const stream = uniqueStream("watch");
let config: Config;
let proxy: TestApp;
let worker: TestApp | undefined;
let nc: NatsConnection;

beforeAll(async () => {
  config = makeConfig({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "5s" },
    defaults: { timeout: "20s", ttl: "5m", attempts: 1, concurrency: 8, retryAfter: "1s" },
    routes: [
      { name: "slow", methods: ["POST"], path: "/slow" },
      { name: "est", methods: ["PUT"], path: "/slow", retryAfter: "30s" },
      { name: "fresh", methods: ["POST"], path: "/echo/**", retryAfter: "30s" },
    ],
  });
  // A worker first, so that the route consumers exist, then the proxy alone.
  const first = await startApp(config, "worker");
  await first.app.ready;
  await first.close();
  proxy = await startApp(config, "proxy");
  await proxy.app.ready;
  nc = await connect({ servers: env.nats.url });
});

afterEach(async () => {
  await worker?.close();
  worker = undefined;
});

afterAll(async () => {
  await nc?.close();
  await proxy?.close();
});

async function startWorker(): Promise<void> {
  worker = await startApp(config, "worker");
  await worker.app.ready;
}

async function submit(path: string, method: "post" | "put" = "post"): Promise<string> {
  const res = await request(proxy.url)[method](path).send("x");
  expect(res.status).toBe(202);
  return res.body.id as string;
}

const statusOf = async (id: string) => (await request(proxy.url).get(`${JOBS}/${id}`).redirects(0)).body.status as string;

describe("long-poll: Prefer: wait=N on the status URL", () => {
  it("holds the request while the job runs and answers 303 once it is final, without another poll", async () => {
    await startWorker();
    const id = await submit(`/slow?ms=1200&tag=${uniqueTag("lp")}`);
    await waitFor(async () => (await statusOf(id)) === "running", { what: "the job to run" });

    const held = await request(proxy.url).get(`${JOBS}/${id}`).set("prefer", "wait=30").redirects(0);
    const receivedAt = Date.now();
    // One request, asked while the job ran, answered with the final state: it was held until then.
    expect(held.status).toBe(303);
    expect(held.headers.location).toBe(`${JOBS}/${id}/result`);
    expect(held.body).toMatchObject({ id, status: "completed", links: { self: `${JOBS}/${id}`, result: `${JOBS}/${id}/result` } });
    console.log(`long-poll answered ${receivedAt - Date.parse(held.body.updatedAt as string)} ms after the final record's time`);
    // The same bytes a poll answers.
    const poll = await request(proxy.url).get(`${JOBS}/${id}`).redirects(0);
    expect(poll.text).toBe(held.text);
  });

  it("answers as a poll once N seconds pass, and at once for a finished job", async () => {
    const id = await submit("/slow?ms=0");
    const timedOut = await request(proxy.url).get(`${JOBS}/${id}`).set("prefer", "wait=1").redirects(0);
    expect(timedOut.status).toBe(202);
    expect(timedOut.body).toMatchObject({ id, status: "queued" });
    expect(timedOut.headers["retry-after"]).toBe("1");

    await startWorker();
    await waitFinal(proxy.url, id);
    const done = await request(proxy.url).get(`${JOBS}/${id}`).set("prefer", "wait=30").redirects(0);
    expect(done.status).toBe(303);
  });

  it("answers 404 for an unknown job, as a poll does", async () => {
    const res = await request(proxy.url).get(`${JOBS}/AAAAAAAAAAAAAAAAAAAAAA`).set("prefer", "wait=5");
    expect(res.status).toBe(404);
  });
});

describe("Server-Sent Events on the status URL", () => {
  it("streams queued, running and completed in order, then ends; a reconnect after the end gets 204", async () => {
    const id = await submit(`/slow?ms=300&tag=${uniqueTag("sse")}`);
    const es = new EventSource(`${proxy.url}${JOBS}/${id}`);
    const seen: { status: string; id: string; body: Record<string, unknown> }[] = [];
    const errors: (number | undefined)[] = [];
    es.addEventListener("status", (e) => {
      const body = JSON.parse(e.data) as Record<string, unknown>;
      seen.push({ status: body.status as string, id: e.lastEventId, body });
    });
    es.addEventListener("error", (e) => errors.push((e as { code?: number }).code));
    try {
      await waitFor(() => seen.length === 1, { what: "the first event" });
      expect(seen[0]?.status).toBe("queued");
      await startWorker();
      // After the final event the server ends the stream; EventSource reconnects with
      // Last-Event-ID, gets 204 and stops for good.
      await waitFor(() => es.readyState === EventSource.CLOSED, { what: "the EventSource to close" });
      expect(seen.map((s) => s.status)).toEqual(["queued", "running", "completed"]);
      expect(new Set(seen.map((s) => s.id)).size).toBe(3);
      expect(seen[2]?.body).toMatchObject({ id, status: "completed", responseStatus: 200, links: { result: `${JOBS}/${id}/result` } });
      expect(errors).toContain(204);
    } finally {
      es.close();
    }
  });

  it("frames events with event, id, data and retry (the route's retryAfter in ms), and ends after a final state", async () => {
    await startWorker();
    const id = await submit("/slow?ms=0");
    await waitFinal(proxy.url, id);
    const text = await new Promise<{ status: number; type: string | undefined; body: string }>((resolve, reject) => {
      const req = httpRequest(`${proxy.url}${JOBS}/${id}`, { headers: { accept: "text/event-stream" } }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, type: res.headers["content-type"], body }));
      });
      req.on("error", reject);
      req.end();
    });
    expect(text.status).toBe(200);
    expect(text.type).toMatch(/^text\/event-stream/);
    const [, eventId, data] = /^retry: 1000\nevent: status\nid: (\S+)\ndata: (.*)\n\n$/.exec(text.body) ?? [];
    expect(JSON.parse(data ?? "null")).toMatchObject({ id, status: "completed" });

    // Reconnecting with the final event's id: nothing more to say.
    const again = await request(proxy.url).get(`${JOBS}/${id}`).set("accept", "text/event-stream").set("last-event-id", eventId ?? "");
    expect(again.status).toBe(204);
    // With an older id: the current state at once.
    const older = await request(proxy.url).get(`${JOBS}/${id}`).set("accept", "text/event-stream").set("last-event-id", "1-queued").buffer(true).parse((r, cb) => {
      let body = "";
      r.on("data", (c: Buffer) => (body += c.toString()));
      r.on("end", () => cb(null, body));
    });
    expect(older.status).toBe(200);
    expect(older.body as string).toContain(`id: ${eventId}\n`);
  });

  it("answers 404 problem+json for an unknown job", async () => {
    const res = await request(proxy.url).get(`${JOBS}/AAAAAAAAAAAAAAAAAAAAAA`).set("accept", "text/event-stream");
    expect(res.status).toBe(404);
    expect(res.headers["content-type"]).toBe("application/problem+json");
  });
});

describe("shutdown", () => {
  it("ends the streams at once instead of holding the proxy's drain", async () => {
    // A drain time longer than the test's timeout: only ending the streams lets close() finish.
    const other = await startApp(config, { role: "proxy", drainMs: 120_000 });
    await other.app.ready;
    const id = await submit("/slow?ms=0");
    let first!: () => void;
    const firstEvent = new Promise<void>((resolve) => (first = resolve));
    const ended = new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${other.url}${JOBS}/${id}`, { headers: { accept: "text/event-stream" } }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          body += c;
          first();
        });
        res.on("end", () => resolve(body));
      });
      req.on("error", reject);
      req.end();
    });
    await firstEvent;
    await other.close();
    expect(await ended).toMatch(/^retry: 1000\nevent: status\nid: \S+\ndata: .*"status":"queued"/);
  });
});

describe("WebSocket on the status URL", () => {
  it("sends queued, running and completed as text messages, then closes with 1000", async () => {
    const id = await submit(`/slow?ms=300&tag=${uniqueTag("ws")}`);
    const ws = new WebSocket(`${proxy.url.replace("http", "ws")}${JOBS}/${id}`);
    const seen: Record<string, unknown>[] = [];
    const closed = new Promise<number>((resolve) => ws.on("close", (code) => resolve(code)));
    ws.on("message", (data, isBinary) => {
      expect(isBinary).toBe(false);
      seen.push(JSON.parse(String(data)) as Record<string, unknown>);
    });
    await waitFor(() => seen.length === 1, { what: "the first message" });
    await startWorker();
    expect(await closed).toBe(1000);
    expect(seen.map((s) => s.status)).toEqual(["queued", "running", "completed"]);
    expect(seen[2]).toMatchObject({ id, responseStatus: 200, links: { self: `${JOBS}/${id}` } });
  });

  it("refuses an unknown job with 404 before the handshake, and never passes the jobs path through", async () => {
    const ws = new WebSocket(`${proxy.url.replace("http", "ws")}${JOBS}/AAAAAAAAAAAAAAAAAAAAAA`);
    const status = await new Promise<number>((resolve) => {
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.on("error", () => undefined);
    });
    // The test backend switches every upgrade (101): a 404 is slowlane's own answer.
    expect(status).toBe(404);
  });
});

describe("completion events on NATS", () => {
  it("publishes every transition, queued at accept included, as the status JSON on <stream>.events.<route>.<id>", async () => {
    const events: { subject: string; body: Record<string, unknown> }[] = [];
    const sub = nc.subscribe(`${stream}.events.>`, {
      callback: (_err, msg) => void events.push({ subject: msg.subject, body: msg.json() }),
    });
    await nc.flush();
    try {
      const id = await submit(`/slow?ms=0&tag=${uniqueTag("ev")}`);
      await startWorker();
      await waitFor(() => events.some((e) => e.body.id === id && e.body.status === "completed"), { what: "the completed event" });
      const mine = events.filter((e) => e.body.id === id);
      expect(mine.map((e) => e.subject)).toEqual(Array(3).fill(`${stream}.events.slow.${id}`));
      expect(mine.map((e) => e.body.status)).toEqual(["queued", "running", "completed"]);
      const poll = await request(proxy.url).get(`${JOBS}/${id}`).redirects(0);
      expect(mine[2]?.body).toEqual(poll.body);
    } finally {
      sub.unsubscribe();
    }
  });
});

describe("status JSON: links, estimatedCompletion and Retry-After", () => {
  it("estimates a pending job from the route's recent calls and caps Retry-After by the route's retryAfter", async () => {
    await startWorker();
    // Calls of about 1.5 s teach the proxy the route's duration (from their completion events).
    const samples = await Promise.all([1, 2, 3].map((n) => submit(`/slow?ms=1500&tag=${uniqueTag(`learn${n}`)}`, "put")));
    for (const id of samples) await waitFinal(proxy.url, id);

    const id = await submit(`/slow?ms=1500&tag=${uniqueTag("est")}`, "put");
    const running = await waitFor(
      async () => {
        const res = await request(proxy.url).get(`${JOBS}/${id}`).redirects(0);
        return res.body.status === "running" ? res : undefined;
      },
      { what: "the job to run" },
    );
    expect(running.body.links).toEqual({ self: `${JOBS}/${id}`, result: `${JOBS}/${id}/result`, cancel: `${JOBS}/${id}` });
    expect(Date.parse(running.body.estimatedCompletion as string)).toBeGreaterThan(Date.parse(running.body.updatedAt as string));
    const retryAfter = Number(running.headers["retry-after"]);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(2);
    await waitFinal(proxy.url, id);
  });

  it("sends the route's retryAfter when nothing is known of the route, and no estimate", async () => {
    const id = await submit("/echo/unknown");
    const res = await request(proxy.url).get(`${JOBS}/${id}`).redirects(0);
    expect(res.status).toBe(202);
    expect(res.body.estimatedCompletion).toBeUndefined();
    expect(res.headers["retry-after"]).toBe("30");
    expect(res.body.links.result).toBe(`${JOBS}/${id}/result`);
  });
});

describe("the watch's bound", () => {
  it("refuses watchers past its limit and frees their room when they stop", async () => {
    const context = await provision(nc, config, { consumers: false });
    const store = createJobStore(context);
    const watch = createJobWatch({ store: () => store, log: createLogger({ level: "silent" }), maxWatchers: 2 });
    try {
      const stops = [await watch.watch("a", { onEvent: () => undefined }), await watch.watch("a", { onEvent: () => undefined })];
      expect(watch.size).toBe(2);
      await expect(watch.watch("b", { onEvent: () => undefined })).rejects.toMatchObject({ code: "SLOWLANE_WAIT_LIMIT" });
      for (const stop of stops) stop();
      expect(watch.size).toBe(0);
      const stop = await watch.watch("b", { onEvent: () => undefined });
      stop();
    } finally {
      watch.close();
    }
  });
});
