/**
 * Cancellation, `DELETE <jobs.path>/<id>`, through real HTTP, a real nats-server and a real
 * backend: a queued job is canceled and its message removed, a running one has its backend call
 * aborted and is never overwritten by the worker, a finished one loses its record and stored
 * response (KV or Object Store), and a job waiting between retries is never called again.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { binaryPattern } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { JOBS, uniqueTag } from "../helpers/jobs.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const inspector = useJetStreamInspector(env);
const { streamMessages, kvValue, hasObject } = inspector;

function logsOf(app: TestApp, id: string, msg: string) {
  return app.logs.filter((l) => l.job === id && l.msg === msg);
}

async function waitForJobLog(app: TestApp, id: string, msg: string, timeoutMs = 15_000) {
  return waitFor(() => logsOf(app, id, msg)[0], { timeoutMs, what: `log "${msg}" of job ${id}` });
}

/** The status URL says `canceled`: 200, no result URL, no Location. */
async function expectCanceled(app: TestApp, id: string): Promise<void> {
  const status = await app.status(id);
  expect(status.status).toBe(200);
  expect(status.headers.location).toBeUndefined();
  expect(status.body).toMatchObject({ id, status: "canceled", statusUrl: `${JOBS}/${id}` });
  expect(status.body.resultUrl).toBeUndefined();
  expect(Date.parse(status.body.expiresAt as string)).not.toBeNaN();

  const result = await app.result(id).redirects(0);
  expect(result.status).toBe(410);
  expect(result.headers["content-type"]).toBe("application/problem+json");
  expect(result.body).toMatchObject({ status: 410, code: "SLOWLANE_JOB_CANCELED" });
}

async function expectNotFound(app: TestApp, path: string): Promise<void> {
  const res = await request(app.url).get(path).redirects(0);
  expect(res.status, path).toBe(404);
  expect(res.headers["content-type"]).toBe("application/problem+json");
  expect(res.body.code).toBe("SLOWLANE_JOB_NOT_FOUND");
}

// ---- queued jobs: a proxy and no worker, so nothing is picked up ------------------------------

describe("canceling a queued job (no worker running)", () => {
  const stream = uniqueStream("cancelq");
  const proxy = useSlowlane({
    environment: env,
    role: "proxy",
    config: {
      nats: { stream, ackWait: "2s" },
      defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    },
    routes: [
      { name: "slow", methods: ["POST"], path: "/slow" },
      { name: "echo", methods: ["POST"], path: "/echo/**" },
    ],
  });

  it("answers 204, then the job is canceled, its message gone, and a worker started later never calls the backend", async () => {
    const tag = uniqueTag("queued");
    const before = await streamMessages(stream);
    const id = await proxy.submit("post", `/slow?ms=0&tag=${tag}`, { body: "queued body" });
    expect(await streamMessages(stream)).toBe(before + 1);

    const queued = await proxy.status(id);
    expect(queued.status).toBe(202);
    expect(queued.body.status).toBe("queued");

    const del = await request(proxy.url).delete(`${JOBS}/${id}`);
    expect(del.status).toBe(204);
    expect(del.text).toBe("");

    await expectCanceled(proxy, id);
    expect(await streamMessages(stream)).toBe(before);
    expect(logsOf(proxy, id, "job canceled")[0]).toMatchObject({ route: "slow", was: "queued" });

    // A worker starts: the job it would have run comes first in the route's queue, so once a
    // later job of the same route has completed, the canceled one has had every chance to run.
    const worker = await startApp(proxy.config, "worker");
    try {
      await worker.app.ready;
      const laterTag = uniqueTag("later");
      const later = await proxy.submit("post", `/slow?ms=0&tag=${laterTag}`, { body: "later body" });
      await proxy.waitFinal(later);
      expect(env.backend.callsTo(`/slow?ms=0&tag=${laterTag}`)).toHaveLength(1);
      expect(env.backend.callsTo(`/slow?ms=0&tag=${tag}`)).toHaveLength(0);
      expect(worker.logs.filter((l) => l.job === id)).toEqual([]);
      await expectCanceled(proxy, id);
      expect(await streamMessages(stream)).toBe(before);
    } finally {
      await worker.close();
    }
  });

  it("deletes the claim-checked body of a canceled queued job from the Object Store", async () => {
    const before = await streamMessages(stream);
    const id = await proxy.submit("post", `/echo/${uniqueTag("big")}`, { body: binaryPattern(2 * 1024 * 1024) });
    expect(await hasObject(`${stream}_bodies`, `${id}.request`)).toBe(true);

    expect((await request(proxy.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await expectCanceled(proxy, id);
    expect(await streamMessages(stream)).toBe(before);
    expect(await hasObject(`${stream}_bodies`, `${id}.request`)).toBe(false);
  });

  it("DELETE twice: the second is 204 too and deletes the canceled record, so the job is then 404", async () => {
    const before = await streamMessages(stream);
    const id = await proxy.submit("post", `/slow?ms=0&tag=${uniqueTag("twice")}`, { body: "x" });

    expect((await request(proxy.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await expectCanceled(proxy, id);

    // A canceled job is final: a second DELETE removes it like any finished job.
    expect((await request(proxy.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await expectNotFound(proxy, `${JOBS}/${id}`);
    await expectNotFound(proxy, `${JOBS}/${id}/result`);
    expect(await kvValue(`${stream}_jobs`, id)).toBeUndefined();
    expect(await streamMessages(stream)).toBe(before);

    // And a third finds nothing.
    const third = await request(proxy.url).delete(`${JOBS}/${id}`);
    expect(third.status).toBe(404);
    expect(third.body.code).toBe("SLOWLANE_JOB_NOT_FOUND");
  });
});

// ---- running and finished jobs: proxy and worker in one process -------------------------------

describe("canceling running, retrying and finished jobs", () => {
  const stream = uniqueStream("cancelr");
  const app = useSlowlane({
    environment: env,
    config: {
      nats: { stream, ackWait: "2s" },
      defaults: { timeout: "30s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    },
    routes: [
      { name: "hang", methods: ["POST"], path: "/hang" },
      { name: "slow", methods: ["POST"], path: "/slow" },
      { name: "binary", methods: ["GET"], path: "/binary" },
      // Same backend paths, told apart by method.
      { name: "single", methods: ["PUT"], path: "/slow", concurrency: 1 },
      { name: "timeout", methods: ["PUT"], path: "/hang", timeout: "200ms" },
      {
        name: "flaky",
        methods: ["POST"],
        path: "/flaky",
        attempts: 5,
        retryOn: [503],
        backoff: { initial: "5s", jitter: false },
      },
    ],
  });

  /** Deliveries (first ones and redeliveries) a route's consumer has made so far. */
  async function deliveredCount(route: string): Promise<number> {
    const jsm = await jetstreamManager(inspector.nc);
    return (await jsm.consumers.info(stream, `route_${route}`)).delivered.consumer_seq;
  }

  it("aborts the backend call of a running job and never overwrites the canceled status", async () => {
    const tag = uniqueTag("hang");
    const inFlightBefore = env.backend.inFlight;
    const id = await app.submit("post", `/hang?tag=${tag}`, { body: "wait forever" });
    await waitForJobLog(app, id, "job started");
    await waitFor(() => env.backend.callsTo(`/hang?tag=${tag}`).length === 1, { what: "the backend call" });
    expect(env.backend.inFlight).toBe(inFlightBefore + 1);

    const del = await request(app.url).delete(`${JOBS}/${id}`);
    expect(del.status).toBe(204);

    // The backend sees its connection closed: the call is no longer in flight.
    await waitFor(() => env.backend.inFlight === inFlightBefore, { what: "the backend call to be aborted" });
    await waitForJobLog(app, id, "job canceled; its result is not kept");
    expect(logsOf(app, id, "job canceled")[0]).toMatchObject({ was: "running" });

    await expectCanceled(app, id);
    expect(await kvValue(`${stream}_results`, id)).toBeUndefined();
    expect(await hasObject(`${stream}_bodies`, id)).toBe(false);
    expect(env.backend.callsTo(`/hang?tag=${tag}`)).toHaveLength(1);
    expect(logsOf(app, id, "job completed")).toEqual([]);
    expect(logsOf(app, id, "job failed")).toEqual([]);
  });

  it("aborts a slow call with a claim-checked body: no result, and the stored request body is deleted", async () => {
    const tag = uniqueTag("slow");
    const inFlightBefore = env.backend.inFlight;
    // The backend would answer after 20 s; the abort has to come well before (waitFor gives up at 15 s).
    const id = await app.submit("post", `/slow?ms=20000&tag=${tag}`, { body: binaryPattern(2 * 1024 * 1024) });
    await waitFor(() => env.backend.callsTo(`/slow?ms=20000&tag=${tag}`).length === 1, { what: "the backend call" });
    expect(env.backend.callsTo(`/slow?ms=20000&tag=${tag}`)[0]?.body.byteLength).toBe(2 * 1024 * 1024);

    expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await waitFor(() => env.backend.inFlight === inFlightBefore, { what: "the backend call to be aborted" });
    await waitForJobLog(app, id, "job canceled; its result is not kept");

    await expectCanceled(app, id);
    expect(await kvValue(`${stream}_results`, id)).toBeUndefined();
    expect(await hasObject(`${stream}_bodies`, id)).toBe(false);
    await waitFor(async () => !(await hasObject(`${stream}_bodies`, `${id}.request`)), { what: "the request body to be deleted" });
    const record = JSON.parse(new TextDecoder().decode(await kvValue(`${stream}_jobs`, id))) as { status: string };
    expect(record.status).toBe("canceled");
  });

  // Regression guard (nats-server 2.9, the README's minimum): the worker drops a canceled job with a
  // bare `term()`; 2.9 ignores "+TERM <reason>", which would leave the message in the work queue,
  // redelivered every ackWait and holding one of the route's MaxAckPending (= concurrency) slots.
  it("a canceled running job leaves the work queue and frees its route's concurrency slot", async () => {
    const before = await streamMessages(stream);
    const tag = uniqueTag("single");
    const first = await app.submit("put", `/slow?ms=20000&tag=${tag}`, { body: "holds the only slot" });
    await waitFor(() => env.backend.callsTo(`/slow?ms=20000&tag=${tag}`).length === 1, { what: "the backend call" });
    expect((await request(app.url).delete(`${JOBS}/${first}`)).status).toBe(204);
    await waitForJobLog(app, first, "job canceled; its result is not kept");

    // The route (concurrency 1) takes the next job.
    const next = await app.submit("put", `/slow?ms=0&tag=${tag}-next`, { body: "next" });
    const done = await app.waitFinal(next);
    expect(done.body.status).toBe("completed");
    await waitFor(async () => (await streamMessages(stream)) === before, { what: "the queue to be empty again" });
  });

  // Regression guard: once a canceled job's record is deleted (a second DELETE), nothing may bring it
  // back: no leftover message for the status URL to find, none for a worker to run again.
  it("a running job canceled and then deleted is never run again", async () => {
    const before = await streamMessages(stream);
    const tag = uniqueTag("rerun");
    const id = await app.submit("post", `/slow?ms=1000&tag=${tag}`, { body: "once" });
    await waitFor(() => env.backend.callsTo(`/slow?ms=1000&tag=${tag}`).length === 1, { what: "the backend call" });
    expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await waitForJobLog(app, id, "job canceled; its result is not kept");
    expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await expectNotFound(app, `${JOBS}/${id}`);

    await waitFor(async () => (await streamMessages(stream)) === before, { what: "the canceled job's message to leave the queue" });
    expect(env.backend.callsTo(`/slow?ms=1000&tag=${tag}`)).toHaveLength(1);
    await expectNotFound(app, `${JOBS}/${id}`);
  });

  it("cancels a job waiting between retries: it is never called again", async () => {
    const key = uniqueTag("flaky");
    const id = await app.submit("post", `/flaky?key=${key}&fails=100&status=503`, { body: "retry me" });
    await waitForJobLog(app, id, "attempt failed");
    const waiting = await app.status(id);
    expect(waiting.status).toBe(202);
    expect(waiting.body).toMatchObject({ status: "queued", attempts: 1, error: { upstreamStatus: 503 } });
    const delivered = await deliveredCount("flaky");

    expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await expectCanceled(app, id);

    // After the 5 s backoff the message comes back to a worker, which must drop it.
    await waitFor(async () => (await deliveredCount("flaky")) > delivered, {
      timeoutMs: 20_000,
      what: "the canceled job's message to be redelivered",
    });
    // A job of the same route submitted after it, run to completion, as a barrier.
    const barrierKey = uniqueTag("barrier");
    await app.waitFinal(await app.submit("post", `/flaky?key=${barrierKey}&fails=0`, { body: "barrier" }));
    expect(env.backend.callsTo(`/flaky?key=${key}`)).toHaveLength(1);
    await expectCanceled(app, id);
  });

  // A canceled job waiting between retries has its claim-checked request body deleted by the cancel
  // itself (its message names the object), not only when the message comes back to a worker.
  it("cancels a job with a claim-checked body waiting between retries: its stored request body is deleted too", async () => {
    const key = uniqueTag("flakybig");
    const id = await app.submit("post", `/flaky?key=${key}&fails=100&status=503`, { body: binaryPattern(2 * 1024 * 1024) });
    await waitForJobLog(app, id, "attempt failed");
    expect(await hasObject(`${stream}_bodies`, `${id}.request`)).toBe(true);
    const delivered = await deliveredCount("flaky");

    expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await waitFor(async () => (await deliveredCount("flaky")) > delivered, {
      timeoutMs: 20_000,
      what: "the canceled job's message to be redelivered",
    });
    await app.waitFinal(await app.submit("post", `/flaky?key=${uniqueTag("barrier")}&fails=0`, { body: "barrier" }));
    expect(env.backend.callsTo(`/flaky?key=${key}`)).toHaveLength(1);
    await expectCanceled(app, id);
    // Nothing can use it any more: a canceled job never runs.
    expect(await hasObject(`${stream}_bodies`, `${id}.request`)).toBe(false);
  });

  it("deletes a finished job: its record and its stored (KV) response are gone, then 404", async () => {
    const before = await streamMessages(stream);
    // 20 KiB: too big to ride in the record, small enough for the results KV.
    const id = await app.submit("get", `/binary?size=20480&tag=${uniqueTag("done")}`);
    await app.waitFinal(id);
    // Read the result once, so this proxy has it cached.
    const result = await app.result(id);
    expect(result.status).toBe(201);
    expect(await kvValue(`${stream}_results`, id)).toBeDefined();
    expect(await kvValue(`${stream}_jobs`, id)).toBeDefined();

    const del = await request(app.url).delete(`${JOBS}/${id}`);
    expect(del.status).toBe(204);
    await expectNotFound(app, `${JOBS}/${id}`);
    await expectNotFound(app, `${JOBS}/${id}/result`);
    expect(await kvValue(`${stream}_results`, id)).toBeUndefined();
    expect(await kvValue(`${stream}_jobs`, id)).toBeUndefined();
    expect(await streamMessages(stream)).toBe(before);
    expect(logsOf(app, id, "finished job deleted")).toHaveLength(1);

    // Deleting it again: nothing is left to delete.
    expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(404);
  });

  it("deletes a finished job whose response is in the Object Store", async () => {
    const size = 3 * 1024 * 1024;
    const id = await app.submit("get", `/binary?size=${size}&tag=${uniqueTag("big")}`);
    await app.waitFinal(id);
    const result = await request(app.url).head(`${JOBS}/${id}/result`);
    expect(result.status).toBe(201);
    expect(await hasObject(`${stream}_bodies`, id)).toBe(true);
    expect(await kvValue(`${stream}_results`, id)).toBeUndefined();

    expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await expectNotFound(app, `${JOBS}/${id}`);
    await expectNotFound(app, `${JOBS}/${id}/result`);
    expect(await hasObject(`${stream}_bodies`, id)).toBe(false);
    expect(await kvValue(`${stream}_jobs`, id)).toBeUndefined();
  });

  // Regression guard: a failed job's message must leave the work queue at once (a bare `term()`;
  // nats-server 2.9 ignores `+TERM <reason>`), or a DELETE before the next ackWait would find the
  // message and answer 202 "queued" instead of 404.
  it("deletes a failed job and its dead letter", async () => {
    const dead = `${stream}_dead`;
    const deadBefore = await streamMessages(dead);
    const id = await app.submit("put", `/hang?tag=${uniqueTag("failed")}`, { body: "never answered" });
    const done = await app.waitFinal(id);
    expect(done.body).toMatchObject({ status: "failed", error: { code: "SLOWLANE_UPSTREAM_TIMEOUT" } });
    expect(await streamMessages(dead)).toBe(deadBefore + 1);

    expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(204);
    await expectNotFound(app, `${JOBS}/${id}`);
    await expectNotFound(app, `${JOBS}/${id}/result`);
    expect(await streamMessages(dead)).toBe(deadBefore);
  });

  it("a finished job deleted through one replica is forgotten by another that had it cached", async () => {
    const other = await startApp(app.config, "proxy");
    try {
      await other.app.ready;
      const id = await app.submit("post", `/slow?ms=0&tag=${uniqueTag("replica")}`, { body: "cached elsewhere" });
      await app.waitFinal(id);
      // The other replica reads it, which caches the finished record and its small body.
      expect((await request(other.url).get(`${JOBS}/${id}`).redirects(0)).status).toBe(303);
      expect((await request(other.url).get(`${JOBS}/${id}/result`)).status).toBe(200);

      expect((await request(app.url).delete(`${JOBS}/${id}`)).status).toBe(204);
      await waitFor(async () => (await request(other.url).get(`${JOBS}/${id}`).redirects(0)).status === 404, {
        what: "the other replica to forget the deleted job",
      });
      await expectNotFound(other, `${JOBS}/${id}/result`);
    } finally {
      await other.close();
    }
  });

  it("answers 404 for unknown and malformed ids and 405 on the result URL", async () => {
    const unknown = await request(app.url).delete(`${JOBS}/AAAAAAAAAAAAAAAAAAAAAA`);
    expect(unknown.status).toBe(404);
    expect(unknown.headers["content-type"]).toBe("application/problem+json");
    expect(unknown.body.code).toBe("SLOWLANE_JOB_NOT_FOUND");

    for (const bad of ["short", "..%2F..%2Fetc", "x".repeat(5000), "*", ">", "a.b.c", "AAAAAAAAAAAAAAAAAAAAA%3E"]) {
      const res = await request(app.url).delete(`${JOBS}/${bad}`);
      expect(res.status, bad).toBe(404);
      expect(res.body.code).toBe("SLOWLANE_JOB_NOT_FOUND");
    }

    const id = await app.submit("post", `/slow?ms=0&tag=${uniqueTag("405")}`, { body: "x" });
    const onResult = await request(app.url).delete(`${JOBS}/${id}/result`);
    expect(onResult.status).toBe(405);
    expect(onResult.headers.allow).toBe("GET, HEAD");
    expect(onResult.body.code).toBe("SLOWLANE_METHOD_NOT_ALLOWED");
    // The job itself is untouched by the refused DELETE.
    const done = await app.waitFinal(id);
    expect(done.body.status).toBe("completed");
  });
});
