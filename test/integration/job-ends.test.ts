/**
 * Every job reaches an end, and never by calling the backend over and over (issue 11 §1-2): a job
 * taken past its route's deadline fails unsent; a job whose stored request body is gone fails; a
 * result that cannot be stored after the backend answered is written again, not fetched again; a
 * record that vanishes mid-call is written again.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { binaryPattern } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { fetchResult, JOBS, uniqueTag, waitFinal } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const inspector = useJetStreamInspector(env);
let jsm: JetStreamManager;
const apps: TestApp[] = [];

beforeAll(async () => {
  jsm = await jetstreamManager(inspector.nc);
});
afterAll(async () => {
  for (const app of apps.reverse()) await app.close();
});

function configDoc(stream: string, routes: Record<string, unknown>[]) {
  return {
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "2s" },
    defaults: { timeout: "10s", ttl: "10m", backoff: { initial: "100ms", max: "400ms", factor: 2 } },
    routes,
  };
}

async function start(doc: Record<string, unknown>, role: "run" | "proxy" | "worker" = "run"): Promise<TestApp> {
  const app = await startApp(makeConfig(doc), role);
  apps.push(app);
  await app.app.ready;
  return app;
}

async function deadLetterOf(stream: string, route: string, id: string) {
  return jsm.streams.getMessage(`${stream}_dead`, { last_by_subj: `${stream}.dead.${route}.${id}` });
}

describe("a route's deadline", () => {
  it("fails a job a worker takes after it, unsent, and runs a job within it", { timeout: 30_000 }, async () => {
    const stream = uniqueStream("deadline");
    const doc = configDoc(stream, [{ name: "late", methods: ["POST"], path: "/late/**", deadline: "1s" }]);
    // No worker yet: the jobs wait in the queue.
    const proxy = await start(doc, "proxy");
    const tag = uniqueTag("deadline");
    const accepted = await request(proxy.url).post(`/late/x?tag=${tag}`).send("old");
    expect(accepted.status).toBe(202);
    const id = accepted.body.id as string;
    // Accepted (createdAt) before the 202 came back.
    const answeredAt = Date.now();
    await waitFor(() => Date.now() > answeredAt + 1_000, { what: "the job to be older than its deadline" });

    await start(doc, "worker");
    const done = await waitFinal(proxy.url, id);
    expect(done.body).toMatchObject({ status: "failed", attempts: 0, error: { code: "SLOWLANE_DEADLINE_EXCEEDED" } });
    const result = await request(proxy.url).get(`${JOBS}/${id}/result`);
    expect(result.status).toBe(504);
    expect(result.body).toMatchObject({ status: 504, code: "SLOWLANE_DEADLINE_EXCEEDED" });
    expect((await deadLetterOf(stream, "late", id))?.string()).toBe("old");
    expect(env.backend.callsTo(`/late/x?tag=${tag}`)).toHaveLength(0);

    // A job within its deadline is worked as usual.
    const fresh = await request(proxy.url).post(`/late/y?tag=${tag}`).send("new");
    const completed = await waitFinal(proxy.url, fresh.body.id as string);
    expect(completed.body).toMatchObject({ status: "completed", attempts: 1 });
  });
});

describe("a job whose stored request body is gone", () => {
  it("fails with SLOWLANE_REQUEST_BODY_MISSING, dead-lettered, without calling the backend", { timeout: 30_000 }, async () => {
    const stream = uniqueStream("nobody");
    const doc = configDoc(stream, [{ name: "upload", methods: ["POST"], path: "/echo/**", attempts: 3 }]);
    const proxy = await start(doc, "proxy");
    const tag = uniqueTag("nobody");
    // Larger than one NATS message (1 MiB): the body goes to the Object Store, the message carries the claim check.
    const accepted = await request(proxy.url).post(`/echo/up?tag=${tag}`).send(binaryPattern(1_200_000));
    expect(accepted.status).toBe(202);
    const id = accepted.body.id as string;
    const os = await new Objm(inspector.nc).open(`${stream}_bodies`);
    const stored = (await os.list()).filter((o) => !o.deleted && o.name.startsWith(`${id}.request.`));
    expect(stored).toHaveLength(1);
    await os.delete(stored[0]!.name);

    const worker = await start(doc, "worker");
    const done = await waitFinal(proxy.url, id);
    expect(done.body).toMatchObject({ status: "failed", attempts: 1, error: { code: "SLOWLANE_REQUEST_BODY_MISSING" } });
    expect(done.body.history.map((h: { outcome: string }) => h.outcome)).toEqual(["body_missing"]);
    expect(await deadLetterOf(stream, "upload", id)).not.toBeNull();
    expect(env.backend.callsTo(`/echo/up?tag=${tag}`)).toHaveLength(0);
    expect(worker.logs.filter((l) => l.msg === "job started" && l.job === id)).toHaveLength(1);
  });
});

describe("a result that cannot be stored after the backend answered", () => {
  it("is written again with backoff until it is stored, and the backend is called once", { timeout: 40_000 }, async () => {
    const stream = uniqueStream("storefail");
    const app = await start(configDoc(stream, [{ name: "store", methods: ["GET"], path: "/binary" }]));
    // The results bucket refuses anything (JetStream full, as far as this bucket is concerned).
    const resultsStream = `KV_${stream}_results`;
    const info = await jsm.streams.info(resultsStream);
    await jsm.streams.update(resultsStream, { ...info.config, max_bytes: 1024 });

    const tag = uniqueTag("storefail");
    // 20 KB: past the 8 KiB kept in the record, so it goes to the results bucket.
    const path = `/binary?size=20000&tag=${tag}`;
    const accepted = await request(app.url).get(path);
    expect(accepted.status).toBe(202);
    const id = accepted.body.id as string;
    const failures = () => app.logs.filter((l) => l.msg === "storing the result failed; retrying the write, not the call" && l.job === id);
    // Either the write is retried, or (before the fix) the job went back to the queue and the backend was called again.
    await waitFor(() => failures().length >= 3 || env.backend.callsTo(path).length >= 2, { timeoutMs: 20_000, what: "failed result writes" });
    expect(env.backend.callsTo(path)).toHaveLength(1);
    const scraped = (await request(app.app.adminUrl).get("/metrics")).text;
    expect(scraped).toMatch(/^slowlane_result_store_failures_total\{route="store"\} [3-9]/m);

    await jsm.streams.update(resultsStream, { ...info.config });
    const done = await waitFinal(app.url, id, 20_000);
    expect(done.body).toMatchObject({ status: "completed", attempts: 1, responseStatus: 201 });
    const result = await fetchResult(app.url, id);
    expect(Buffer.compare(result.body as Buffer, binaryPattern(20_000))).toBe(0);
    expect(env.backend.callsTo(path)).toHaveLength(1);
  });
});

describe("a record that vanishes mid-call", () => {
  it("is written again when the call ends: the job completes, the backend is called once", { timeout: 30_000 }, async () => {
    const stream = uniqueStream("vanish");
    const app = await start(configDoc(stream, [{ name: "slow", methods: ["POST"], path: "/slow" }]));
    const tag = uniqueTag("vanish");
    const path = `/slow?ms=1500&tag=${tag}`;
    const accepted = await request(app.url).post(path).send("x");
    const id = accepted.body.id as string;
    await waitFor(() => env.backend.callsTo(path).length === 1, { what: "the call to start" });
    // Gone mid-call, as a record aged out of the bucket or deleted by hand would be.
    const jobs = await new Kvm(inspector.nc).open(`${stream}_jobs`);
    await jobs.purge(id);

    const done = await waitFinal(app.url, id);
    expect(done.body).toMatchObject({ status: "completed", attempts: 1, responseStatus: 200 });
    expect(env.backend.callsTo(path)).toHaveLength(1);
    expect(app.logs.some((l) => l.msg === "the job's record was gone mid-run (aged out or deleted); writing it again" && l.job === id)).toBe(true);
    // Acked: nothing of the job is left in the work queue to be delivered again.
    await waitFor(async () => (await jsm.streams.getMessage(stream, { last_by_subj: `${stream}.jobs.slow.${id}` })) === null);
  });
});
