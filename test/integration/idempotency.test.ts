/**
 * `Idempotency-Key` on async routes, through real HTTP, a real nats-server and a real backend: the
 * same key from the same caller on the same route names one job (answered again with
 * `idempotent-replayed: true`), whether that job is queued, running or finished; another caller or
 * another route gets another job; invalid keys are refused before anything is queued; once the job
 * has expired, the key makes a new one.
 */
import { connect as connectTcp } from "node:net";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { JOBS, uniqueTag } from "../helpers/jobs.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const { streamMessages } = useJetStreamInspector(env);

interface Submitted {
  id: string;
  replayed: string | undefined;
}

/** POSTs with an Idempotency-Key (and optional extra headers), expecting a 202. */
async function post(app: TestApp, path: string, key: string | undefined, headers: Record<string, string> = {}): Promise<Submitted> {
  const keyHeader: Record<string, string> = key === undefined ? {} : { "idempotency-key": key };
  const res = await app.send("post", path, { body: "body", headers: { "content-type": "text/plain", ...keyHeader, ...headers } });
  expect(res.status, res.text).toBe(202);
  const id = res.body.id as string;
  expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
  expect(res.headers.location).toBe(`${JOBS}/${id}`);
  // A replay answers `status: "queued"` whatever the job's state (sendAccepted): only id and URL are checked.
  expect(res.body).toMatchObject({ id, statusUrl: `${JOBS}/${id}` });
  return { id, replayed: res.headers["idempotent-replayed"] as string | undefined };
}

/** Sends raw bytes and resolves with what the server answered before closing (or going quiet). */
function rawExchange(url: string, text: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connectTcp(Number(port), hostname);
    const chunks: Buffer[] = [];
    const done = () => resolve(Buffer.concat(chunks).toString("latin1"));
    socket.setTimeout(3_000, () => {
      socket.destroy();
      done();
    });
    socket.on("data", (c: Buffer) => {
      chunks.push(c);
      // One answer is all we need: stop once its body (Content-Length) is complete.
      const all = Buffer.concat(chunks).toString("latin1");
      const end = all.indexOf("\r\n\r\n");
      const length = /content-length: *(\d+)/i.exec(all.slice(0, end))?.[1];
      if (end !== -1 && length !== undefined && all.length >= end + 4 + Number(length)) {
        socket.destroy();
        done();
      }
    });
    socket.on("end", done);
    socket.on("close", done);
    socket.on("error", reject);
    socket.write(Buffer.from(text, "latin1"));
  });
}

// ---- proxy and worker together ----------------------------------------------------------------

describe("Idempotency-Key with a worker running", () => {
  const stream = uniqueStream("idem");
  const app = useSlowlane({
    environment: env,
    config: {
      nats: { stream, ackWait: "2s" },
      defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    },
    routes: [
      { name: "slow", methods: ["POST"], path: "/slow" },
      { name: "other", methods: ["POST"], path: "/other/**" },
      { name: "echo", methods: ["POST"], path: "/echo/**" },
      { name: "brief", methods: ["POST"], path: "/brief/**", ttl: "1s" },
    ],
  });

  it("answers the same key again with the same job, replayed, after it completed; the backend is called once", async () => {
    const tag = uniqueTag("done");
    const key = `key-${tag}`;
    const first = await post(app, `/slow?ms=0&tag=${tag}`, key);
    expect(first.replayed).toBeUndefined();
    const done = await app.waitFinal(first.id);
    expect(done.body).toMatchObject({ status: "completed", attempts: 1 });

    const again = await post(app, `/slow?ms=0&tag=${tag}`, key);
    expect(again).toEqual({ id: first.id, replayed: "true" });
    const stillDone = await app.waitFinal(first.id);
    expect(stillDone.body).toMatchObject({ status: "completed", attempts: 1, createdAt: done.body.createdAt });
    expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(1);
    expect(app.logs.filter((l) => l.job === first.id && l.msg === "idempotent retry: answered with the existing job")).toHaveLength(1);
  });

  it("answers the same key again while the job is running", async () => {
    const tag = uniqueTag("running");
    const key = `key-${tag}`;
    const first = await post(app, `/slow?ms=1500&tag=${tag}`, key);
    await waitFor(() => env.backend.callsTo(`/slow?ms=1500&tag=${tag}`).length === 1, { what: "the backend call" });
    const running = await request(app.url).get(`${JOBS}/${first.id}`);
    expect(running.body.status).toBe("running");

    const again = await post(app, `/slow?ms=1500&tag=${tag}`, key);
    expect(again).toEqual({ id: first.id, replayed: "true" });
    await app.waitFinal(first.id);
    expect(env.backend.callsTo(`/slow?ms=1500&tag=${tag}`)).toHaveLength(1);
  });

  it("scopes keys by caller: another Authorization (or none) gets another job", async () => {
    const tag = uniqueTag("auth");
    const key = `key-${tag}`;
    const alice = await post(app, `/slow?ms=0&tag=${tag}`, key, { authorization: "Bearer alice" });
    const bob = await post(app, `/slow?ms=0&tag=${tag}`, key, { authorization: "Bearer bob" });
    const anonymous = await post(app, `/slow?ms=0&tag=${tag}`, key);
    const aliceAgain = await post(app, `/slow?ms=0&tag=${tag}`, key, { authorization: "Bearer alice" });
    expect(new Set([alice.id, bob.id, anonymous.id]).size).toBe(3);
    expect([alice.replayed, bob.replayed, anonymous.replayed]).toEqual([undefined, undefined, undefined]);
    expect(aliceAgain).toEqual({ id: alice.id, replayed: "true" });
    for (const job of [alice, bob, anonymous]) await app.waitFinal(job.id);
    expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(3);
  });

  it("scopes keys by route: the same key on another route is another job", async () => {
    const tag = uniqueTag("route");
    const key = `key-${tag}`;
    const onSlow = await post(app, `/slow?ms=0&tag=${tag}`, key);
    const onOther = await post(app, `/other/x?tag=${tag}`, key);
    expect(onOther.id).not.toBe(onSlow.id);
    expect(onOther.replayed).toBeUndefined();
    await app.waitFinal(onSlow.id);
    const other = await app.waitFinal(onOther.id);
    expect(other.body.route).toBe("other");
    expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(1);
    expect(env.backend.callsTo(`/other/x?tag=${tag}`)).toHaveLength(1);
  });

  it("makes one job of 20 concurrent submissions with one key; the backend is called once", async () => {
    const tag = uniqueTag("concurrent");
    const key = `key-${tag}`;
    const answers = await Promise.all(Array.from({ length: 20 }, () => post(app, `/slow?ms=200&tag=${tag}`, key)));
    const ids = new Set(answers.map((a) => a.id));
    expect(ids.size).toBe(1);
    const [id] = [...ids] as [string];
    const done = await app.waitFinal(id);
    expect(done.body).toMatchObject({ status: "completed", attempts: 1 });
    // Whatever was published twice was stored once (Nats-Msg-Id) or dropped by the worker: once is the contract.
    await waitFor(async () => (await streamMessages(stream)) === 0, { what: "the queue to be empty" });
    expect(env.backend.callsTo(`/slow?ms=200&tag=${tag}`)).toHaveLength(1);
  });

  it("forwards the key to the backend", async () => {
    const key = `key-${uniqueTag("forward")}`;
    const { id } = await post(app, "/echo/forwarded", key);
    await app.waitFinal(id);
    const result = await app.result(id);
    expect(result.status).toBe(200);
    expect((result.body as { headers: Record<string, string> }).headers["idempotency-key"]).toBe(key);
  });

  it("accepts keys of 1 and 255 printable characters, spaces included", async () => {
    for (const key of ["k", "x".repeat(255), "a key with spaces and ~!@#$%^&*()"]) {
      const tag = uniqueTag("valid");
      const first = await post(app, `/slow?ms=0&tag=${tag}`, key);
      const again = await post(app, `/slow?ms=0&tag=${tag}`, key);
      expect(again).toEqual({ id: first.id, replayed: "true" });
      await app.waitFinal(first.id);
    }
  });

  it("refuses invalid keys with 400 problem+json before anything is queued", async () => {
    const tag = uniqueTag("invalid");
    const before = await streamMessages(stream);
    const invalid = ["", "x".repeat(256), "tab\there", "caf\u00e9", "\u00ff".repeat(3)];
    for (const key of invalid) {
      const res = await request(app.url).post(`/slow?ms=0&tag=${tag}`).set("idempotency-key", key).send("body");
      expect(res.status, JSON.stringify(key)).toBe(400);
      expect(res.headers["content-type"]).toBe("application/problem+json");
      expect(res.body).toMatchObject({ status: 400, code: "SLOWLANE_BAD_REQUEST" });
    }
    expect(await streamMessages(stream)).toBe(before);
    expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(0);
  });

  it("refuses keys with control characters (Node's parser answers 400 itself), nothing queued", async () => {
    const tag = uniqueTag("control");
    const before = await streamMessages(stream);
    const host = new URL(app.url).host;
    // No client library sends these; Node's HTTP parser refuses the request before it reaches the
    // app (a bare 400 with no body, not problem+json). HTAB and bytes 0x80-0xff do get through, and
    // the app refuses them (previous test).
    for (const key of ["a\x00b", "a\x01b", "a\x1bb", "a\rb", "a\x7fb"]) {
      const answer = await rawExchange(
        app.url,
        `POST /slow?ms=0&tag=${tag} HTTP/1.1\r\nhost: ${host}\r\nidempotency-key: ${key}\r\ncontent-length: 4\r\n\r\nbody`,
      );
      expect(answer.split("\r\n")[0], JSON.stringify(key)).toBe("HTTP/1.1 400 Bad Request");
    }
    expect(await streamMessages(stream)).toBe(before);
    expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(0);
  });

  // Node joins repeated unknown headers with ", ", so two Idempotency-Key lines would reach the app
  // as one key "a, b": accept counts the raw headers and refuses two keys.
  it("refuses a request with two Idempotency-Key headers", async () => {
    const tag = uniqueTag("twice");
    const host = new URL(app.url).host;
    const answer = await rawExchange(
      app.url,
      `POST /slow?ms=0&tag=${tag} HTTP/1.1\r\nhost: ${host}\r\nidempotency-key: a\r\nidempotency-key: b\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbody`,
    );
    expect(answer.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
  });

  it("makes a new job with the same key once the first has expired (ttl 1s); the backend runs again", async () => {
    const tag = uniqueTag("expired");
    const key = `key-${tag}`;
    const first = await post(app, `/brief/x?tag=${tag}`, key);
    const firstDone = await app.waitFinal(first.id);
    await waitFor(async () => (await request(app.url).get(`${JOBS}/${first.id}`).redirects(0)).status === 410, {
      what: "the job to expire",
    });

    const second = await post(app, `/brief/x?tag=${tag}`, key);
    expect(second.replayed).toBeUndefined();
    // The id is derived from the key, so the new job has the same id: it replaces the expired one.
    expect(second.id).toBe(first.id);
    const secondDone = await app.waitFinal(second.id);
    expect(secondDone.body).toMatchObject({ status: "completed", attempts: 1 });
    expect(secondDone.body.createdAt).not.toBe(firstDone.body.createdAt);
    expect(env.backend.callsTo(`/brief/x?tag=${tag}`)).toHaveLength(2);
  });

  // After a finished job is deleted its record is gone, and publishing the new job under the old
  // Nats-Msg-Id would be swallowed as a duplicate within JetStream's 2-minute window: accept checks
  // the PubAck's `duplicate` flag and republishes under a fresh message id when no job exists.
  it("makes a new job with the same key after the first was deleted", async () => {
    const tag = uniqueTag("deleted");
    const key = `key-${tag}`;
    const first = await post(app, `/slow?ms=0&tag=${tag}`, key);
    await app.waitFinal(first.id);
    expect((await request(app.url).delete(`${JOBS}/${first.id}`)).status).toBe(204);
    expect((await request(app.url).get(`${JOBS}/${first.id}`)).status).toBe(404);

    const second = await post(app, `/slow?ms=0&tag=${tag}`, key);
    expect(second.replayed).toBeUndefined();
    // A 202 promises a job: it must not be unknown right after.
    expect((await request(app.url).get(`${JOBS}/${second.id}`).redirects(0)).status).not.toBe(404);
    const done = await app.waitFinal(second.id);
    expect(done.body.status).toBe("completed");
    expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(2);
  });
});

// ---- a proxy alone: the job stays queued --------------------------------------------------------

describe("Idempotency-Key while the job is still queued (no worker)", () => {
  const stream = uniqueStream("idemq");
  const proxy = useSlowlane({
    environment: env,
    role: "proxy",
    config: {
      nats: { stream, ackWait: "2s" },
      defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    },
    routes: [{ name: "slow", methods: ["POST"], path: "/slow" }],
  });

  it("answers the same key with the queued job, queues one message, and the backend runs it once", async () => {
    const tag = uniqueTag("queued");
    const key = `key-${tag}`;
    const before = await streamMessages(stream);
    const first = await post(proxy, `/slow?ms=0&tag=${tag}`, key);
    expect(first.replayed).toBeUndefined();
    const again = await post(proxy, `/slow?ms=0&tag=${tag}`, key);
    expect(again).toEqual({ id: first.id, replayed: "true" });
    expect(await streamMessages(stream)).toBe(before + 1);
    const status = await request(proxy.url).get(`${JOBS}/${first.id}`);
    expect(status.status).toBe(202);
    expect(status.body.status).toBe("queued");

    const worker = await startApp(proxy.config, "worker");
    try {
      await worker.app.ready;
      await proxy.waitFinal(first.id);
      const third = await post(proxy, `/slow?ms=0&tag=${tag}`, key);
      expect(third).toEqual({ id: first.id, replayed: "true" });
      expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(1);
      expect(await streamMessages(stream)).toBe(before);
    } finally {
      await worker.close();
    }
  });

  it("keeps one message for 20 concurrent submissions with one key", async () => {
    const tag = uniqueTag("concurrentq");
    const key = `key-${tag}`;
    const before = await streamMessages(stream);
    const answers = await Promise.all(Array.from({ length: 20 }, () => post(proxy, `/slow?ms=0&tag=${tag}`, key)));
    expect(new Set(answers.map((a) => a.id)).size).toBe(1);
    expect(await streamMessages(stream)).toBe(before + 1);
  });
});

// ---- records that leave the jobs bucket by its max_age --------------------------------------------

describe("Idempotency-Key once the job's record has aged out of the jobs bucket", () => {
  const stream = uniqueStream("idemage");
  // Every route's ttl + timeout is 2 s, so the jobs bucket keeps a record 2 s after its last write.
  const app = useSlowlane({
    environment: env,
    config: {
      nats: { stream, ackWait: "2s" },
      defaults: { timeout: "1s", ttl: "1s", attempts: 1, retryAfter: "1s" },
    },
    routes: [{ name: "slow", methods: ["POST"], path: "/slow" }],
  });

  // Same as after a DELETE: once the record has left the bucket, the new job's publish is a duplicate
  // of the old message id for JetStream's 2-minute window; accept sees `duplicate` and republishes.
  it("makes a new job with the same key; the backend runs again", async () => {
    const tag = uniqueTag("aged");
    const key = `key-${tag}`;
    const first = await post(app, `/slow?ms=0&tag=${tag}`, key);
    await app.waitFinal(first.id);
    await waitFor(async () => (await request(app.url).get(`${JOBS}/${first.id}`).redirects(0)).status === 404, {
      what: "the record to leave the jobs bucket",
    });

    const second = await post(app, `/slow?ms=0&tag=${tag}`, key);
    expect(second.replayed).toBeUndefined();
    expect((await request(app.url).get(`${JOBS}/${second.id}`).redirects(0)).status).not.toBe(404);
    await app.waitFinal(second.id, 10_000);
    expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(2);
  });
});
