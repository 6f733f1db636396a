/**
 * Encryption at rest: with a key file, nothing slowlane stores about a request or a response can be
 * read from NATS. Jobs carry an `Authorization: Bearer SECRET-…` header, a session cookie, a token
 * in the query and a marker in the body; the backend answers with a marker in its body, a set-cookie
 * and a header. Every message of every stream of the deployment (work queue, dead letters, the KV
 * buckets' and the Object Store's own streams) is read raw, plain and base64-decoded, and searched
 * for each of them: with a key file none is there; without one (the control) each is.
 *
 * Then keys rotate: an old key listed second still opens queued jobs and stored results; a removed
 * key fails the job it sealed with SLOWLANE_STORED_DATA_UNREADABLE (dead-lettered, never retried);
 * a stored result that does not open answers 500 problem+json with that code, never garbled bytes.
 */
import { randomBytes } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeRecord } from "../../src/jobs/record.js";
import { toJetStreamNames } from "../../src/nats/names.js";
import { generateKeyLine } from "../../src/security/server-keys.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { fetchResult, JOBS, waitFinal } from "../helpers/jobs.js";
import { writeKeyFile } from "../helpers/keys.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const inspector = useJetStreamInspector(env);
const MiB = 1024 * 1024;

/** One raw message of a stream, as JetStream stores it: its subject, header block and payload. */
interface RawMessage {
  readonly stream: string;
  readonly subject: string;
  readonly bytes: Buffer;
}

/** Every message of every stream whose name contains `prefix`, read one sequence at a time. */
async function rawMessages(prefix: string): Promise<RawMessage[]> {
  const jsm = await jetstreamManager(inspector.nc);
  const out: RawMessage[] = [];
  for await (const stream of jsm.streams.names()) {
    if (!stream.includes(prefix)) continue;
    const { state } = await jsm.streams.info(stream);
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq += 1) {
      const msg = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (!msg) continue;
      const headers = msg.header ? [...msg.header.keys()].map((k) => `${k}: ${msg.header?.values(k).join(", ")}`).join("\n") : "";
      out.push({ stream, subject: msg.subject, bytes: Buffer.concat([Buffer.from(`${msg.subject}\n${headers}\n`), Buffer.from(msg.data)]) });
    }
  }
  return out;
}

/** Base64 runs (either alphabet) long enough to hide a marker. */
const BASE64_RUN = /[A-Za-z0-9+/_-]{24,}={0,2}/g;

/** Whether `secret` is in `bytes` as is, or in a base64 run (decoded once or twice: an inline body is base64 inside JSON). */
function contains(bytes: Buffer, secret: string, depth = 2): boolean {
  if (bytes.includes(secret)) return true;
  if (depth === 0) return false;
  for (const run of bytes.toString("latin1").match(BASE64_RUN) ?? []) {
    if (contains(Buffer.from(run, "base64"), secret, depth - 1)) return true;
  }
  return false;
}

/** Where each secret was found: stream names, per secret. */
function findSecrets(messages: readonly RawMessage[], secrets: Record<string, string>): Record<string, string[]> {
  const found: Record<string, string[]> = {};
  for (const [name, secret] of Object.entries(secrets)) {
    found[name] = [...new Set(messages.filter((m) => contains(m.bytes, secret)).map((m) => m.stream))];
  }
  return found;
}

function routesDoc() {
  return [
    { name: "secure", methods: ["POST"], path: "/reply" },
    // Fails at once: its request goes to dead letters.
    { name: "failing", methods: ["POST"], path: "/reply/failing", attempts: 1, retryOn: [503] },
  ];
}

function configFor(stream: string, keyFile: string | undefined, routes: unknown[] = routesDoc()) {
  return makeConfig({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "2s" },
    ...(keyFile === undefined ? {} : { security: { keyFile } }),
    defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    routes,
  });
}

interface Secrets {
  readonly authorization: string;
  readonly cookie: string;
  readonly token: string;
  readonly body: string;
  readonly response: string;
}

function freshSecrets(): Secrets {
  const r = () => randomBytes(9).toString("hex");
  return { authorization: `Bearer SECRET-${r()}`, cookie: `COOKIE-${r()}`, token: `TOKEN-${r()}`, body: `BODY-${r()}`, response: `RESPONSE-${r()}` };
}

/** A request body of `size` bytes repeating the body marker. */
function bodyOf(secrets: Secrets, size: number): Buffer {
  return Buffer.from(`${secrets.body} `.repeat(Math.ceil(size / (secrets.body.length + 1))).slice(0, Math.max(size, secrets.body.length)));
}

/** Submits a job with every secret; the backend's answer is `size` bytes repeating the response marker. */
async function submit(app: TestApp, secrets: Secrets, path: string, options: { bodyBytes: number; responseBytes?: number; status?: number }) {
  const query = `size=${options.responseBytes ?? 0}&status=${options.status ?? 200}&token=${secrets.token}`;
  const res = await request(app.url)
    .post(`${path}?${query}`)
    .set("authorization", secrets.authorization)
    .set("cookie", `sid=${secrets.cookie}`)
    .set("x-reply-marker", secrets.response)
    .set("content-type", "application/octet-stream")
    .send(bodyOf(secrets, options.bodyBytes));
  expect(res.status, res.text).toBe(202);
  return res.body.id as string;
}

/** Runs the same jobs with or without a key file; returns where each secret was found, before and after the jobs ran. */
async function runJobs(keyFile: string | undefined) {
  const stream = uniqueStream(keyFile ? "sealed" : "plain");
  const secrets = freshSecrets();
  const config = configFor(stream, keyFile);
  const proxy = await startApp(config, "proxy");
  try {
    await proxy.app.ready;
    const ids = {
      inline: await submit(proxy, secrets, "/reply", { bodyBytes: 200, responseBytes: 100 }),
      kv: await submit(proxy, secrets, "/reply", { bodyBytes: 4_000, responseBytes: 200_000 }),
      object: await submit(proxy, secrets, "/reply", { bodyBytes: Math.round(1.5 * MiB), responseBytes: 2 * MiB }),
      failed: await submit(proxy, secrets, "/reply/failing", { bodyBytes: Math.round(1.5 * MiB), status: 503 }),
    };
    const queued = findSecrets(await rawMessages(stream), { ...secrets });
    const worker = await startApp(config, "worker");
    try {
      await worker.app.ready;
      const owner = { authorization: secrets.authorization };
      for (const id of Object.values(ids)) await waitFinal(proxy.url, id, 20_000, owner);
    } finally {
      await worker.close();
    }
    const results = await Promise.all([ids.inline, ids.kv, ids.object, ids.failed].map((id) => fetchResult(proxy.url, id, { authorization: secrets.authorization })));
    const finished = findSecrets(await rawMessages(stream), { ...secrets });
    return { stream, secrets, ids, queued, finished, results, logs: proxy.logs };
  } finally {
    await proxy.close();
  }
}

describe("what is stored, read raw", () => {
  it("with a key file: no header, cookie, query token, request body or response marker anywhere in NATS", async () => {
    const { stream, secrets, ids, queued, finished, results, logs } = await runJobs(writeKeyFile([generateKeyLine()]));
    const nothing = { authorization: [], cookie: [], token: [], body: [], response: [] };
    expect(queued).toEqual(nothing);
    expect(finished).toEqual(nothing);

    // What was stored is what clients get back, whole.
    const [inline, kv, object, failed] = results;
    for (const [res, size] of [[inline, 100], [kv, 200_000], [object, 2 * MiB]] as const) {
      expect(res?.status).toBe(200);
      expect((res?.body as Buffer).byteLength).toBe(size);
      expect((res?.body as Buffer).toString()).toContain(secrets.response);
      expect(res?.headers["set-cookie"]).toEqual([`session=${secrets.response}; HttpOnly`]);
    }
    expect(failed?.status).toBe(502);
    // The failed job's request is kept (sealed) for `slowlane jobs retry`, and the backend got it whole.
    const names = toJetStreamNames(stream);
    expect((await rawMessages(stream)).some((m) => m.subject === names.deadSubject("failing", ids.failed))).toBe(true);
    const call = env.backend.calls.find((c) => c.url.startsWith("/reply/failing") && c.url.includes(secrets.token));
    expect(call?.headers.authorization).toBe(secrets.authorization);
    expect(call?.body.equals(bodyOf(secrets, Math.round(1.5 * MiB)))).toBe(true);
    expect(logs.find((l) => String(l.msg).startsWith("storage: encrypted at rest (AES-256-GCM) with key file"))).toBeDefined();
  });

  it("without a key file (the control): each of them is found, so the search above would see them", async () => {
    const { queued, finished, logs } = await runJobs(undefined);
    for (const where of [queued, finished]) {
      for (const [name, streams] of Object.entries(where)) expect(streams.length, name).toBeGreaterThan(0);
    }
    expect(logs.find((l) => String(l.msg).startsWith("storage: NOT encrypted"))).toBeDefined();
  });
});

describe("key rotation", () => {
  const k1 = generateKeyLine();
  const k2 = generateKeyLine();
  const stream = uniqueStream("rotate");
  const routes = (...names: string[]) => names.map((name) => ({ name, methods: ["POST"], path: `/reply/${name}` }));
  const secrets = freshSecrets();
  const owner = { authorization: secrets.authorization };
  const ids = { done: "", later1: "", later2: "" };

  beforeAll(async () => {
    // Under k1 alone: one job finishes (its result sealed with k1), two wait in routes no worker takes yet.
    const run = await startApp(configFor(stream, writeKeyFile([k1]), routes("done")));
    const proxy = await startApp(configFor(stream, writeKeyFile([k1]), routes("done", "later1", "later2")), "proxy");
    try {
      await Promise.all([run.app.ready, proxy.app.ready]);
      ids.done = await submit(run, secrets, "/reply/done", { bodyBytes: 100, responseBytes: 100_000 });
      await waitFinal(run.url, ids.done, 15_000, owner);
      ids.later1 = await submit(proxy, secrets, "/reply/later1", { bodyBytes: Math.round(1.5 * MiB), responseBytes: 100 });
      ids.later2 = await submit(proxy, secrets, "/reply/later2", { bodyBytes: 100, responseBytes: 100 });
    } finally {
      await Promise.all([run.close(), proxy.close()]);
    }
  });

  it("opens what the old key sealed while it is listed second: queued jobs run, stored results are served", async () => {
    const app = await startApp(configFor(stream, writeKeyFile([k2, k1]), routes("done", "later1")));
    try {
      await app.app.ready;
      const done = await fetchResult(app.url, ids.done, owner);
      expect(done.status).toBe(200);
      expect((done.body as Buffer).byteLength).toBe(100_000);
      expect((done.body as Buffer).toString()).toContain(secrets.response);
      await waitFinal(app.url, ids.later1, 15_000, owner);
      const later = await fetchResult(app.url, ids.later1, owner);
      expect(later.status).toBe(200);
      const call = env.backend.calls.find((c) => c.url.startsWith("/reply/later1"));
      expect(call?.body.equals(bodyOf(secrets, Math.round(1.5 * MiB)))).toBe(true);
      expect(call?.headers.authorization).toBe(secrets.authorization);
    } finally {
      await app.close();
    }
  });

  it("fails a job sealed with a removed key with SLOWLANE_STORED_DATA_UNREADABLE, once, without calling the backend", async () => {
    const app = await startApp(configFor(stream, writeKeyFile([k2]), routes("done", "later1", "later2")));
    const names = toJetStreamNames(stream);
    try {
      await app.app.ready;
      const record = await waitFor(async () => {
        const raw = await inspector.kvValue(names.jobsBucket, ids.later2);
        const decoded = raw && decodeRecord(raw);
        return decoded && decoded.status === "failed" ? decoded : undefined;
      }, { what: "the job to fail" });
      expect(record.error?.code).toBe("SLOWLANE_STORED_DATA_UNREADABLE");
      // Its envelope does not open: it is refused before it is started (no attempt), like any request that cannot be sent.
      expect(record.attempts).toBe(0);
      // Terminated (not redelivered) and dead-lettered, still sealed, for a retry once the key is back.
      await waitFor(async () => (await inspector.streamMessages(names.stream)) === 0, { what: "the work queue to be empty" });
      expect((await rawMessages(stream)).some((m) => m.subject === names.deadSubject("later2", ids.later2))).toBe(true);
      expect(env.backend.calls.some((c) => c.url.startsWith("/reply/later2"))).toBe(false);
      expect(app.logs.some((l) => l.msg === "job failed" && l.job === ids.later2)).toBe(true);
      // Its id was tagged with the removed key too: to clients it is now an unknown id.
      expect((await request(app.url).get(`${JOBS}/${ids.later2}`).set(owner)).status).toBe(404);
    } finally {
      await app.close();
    }
  });
});

describe("stored data that does not open", () => {
  const stream = uniqueStream("tamper");
  const keyFile = writeKeyFile([generateKeyLine()]);
  const names = toJetStreamNames(stream);
  let app: TestApp;

  beforeAll(async () => {
    app = await startApp(configFor(stream, keyFile));
    await app.app.ready;
  });
  afterAll(async () => {
    await app?.close();
  });

  /** Two finished jobs with results in the results bucket, read by nobody yet. */
  async function twoJobs(secrets: Secrets): Promise<[string, string]> {
    const a = await submit(app, secrets, "/reply", { bodyBytes: 10, responseBytes: 100_000 });
    const b = await submit(app, secrets, "/reply", { bodyBytes: 10, responseBytes: 100_000 });
    for (const id of [a, b]) await waitFinal(app.url, id, 15_000, { authorization: secrets.authorization });
    return [a, b];
  }

  /** A proxy that has cached nothing of these jobs. */
  async function freshProxy(): Promise<TestApp> {
    const proxy = await startApp(configFor(stream, keyFile), "proxy");
    await proxy.app.ready;
    return proxy;
  }

  function expectUnreadable(res: Awaited<ReturnType<typeof fetchResult>>, secrets: Secrets): void {
    expect(res.status).toBe(500);
    expect(res.headers["content-type"]).toBe("application/problem+json");
    const problem = JSON.parse((res.body as Buffer).toString()) as Record<string, unknown>;
    expect(problem).toMatchObject({ status: 500, code: "SLOWLANE_STORED_DATA_UNREADABLE" });
    expect((res.body as Buffer).toString()).not.toContain(secrets.response);
  }

  it("answers 500 SLOWLANE_STORED_DATA_UNREADABLE for a body sealed for another job", async () => {
    const secrets = freshSecrets();
    const [a, b] = await twoJobs(secrets);
    const kv = await inspector.kvValue(names.resultsBucket, b);
    await (await new Kvm(inspector.nc).open(names.resultsBucket)).put(a, kv as Uint8Array);
    const proxy = await freshProxy();
    try {
      expectUnreadable(await fetchResult(proxy.url, a, { authorization: secrets.authorization }), secrets);
      expect((await fetchResult(proxy.url, b, { authorization: secrets.authorization })).status).toBe(200);
    } finally {
      await proxy.close();
    }
  });

  it("answers 500 SLOWLANE_STORED_DATA_UNREADABLE for a response head sealed for another job", async () => {
    const secrets = freshSecrets();
    const [a, b] = await twoJobs(secrets);
    const recordA = JSON.parse(Buffer.from((await inspector.kvValue(names.jobsBucket, a)) as Uint8Array).toString()) as { response: { head: string } };
    const recordB = JSON.parse(Buffer.from((await inspector.kvValue(names.jobsBucket, b)) as Uint8Array).toString()) as { response: { head: string } };
    expect(typeof recordA.response.head).toBe("string");
    recordA.response.head = recordB.response.head;
    await (await new Kvm(inspector.nc).open(names.jobsBucket)).put(a, JSON.stringify(recordA));
    const proxy = await freshProxy();
    try {
      // The status is still served (status code and size are not sealed); the result is not.
      const status = await request(proxy.url).get(`${JOBS}/${a}`).set("authorization", secrets.authorization).redirects(0);
      expect(status.status).toBe(303);
      expectUnreadable(await fetchResult(proxy.url, a, { authorization: secrets.authorization }), secrets);
    } finally {
      await proxy.close();
    }
  });
});
