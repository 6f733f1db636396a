/**
 * Retries and dead letters: `retryOn` statuses are retried with the route's backoff (or the
 * backend's Retry-After), other answers are results, and a job that runs out of attempts ends
 * `failed` with its reason and history, its request in the dead-letter stream and its message
 * out of the work queue. A job interrupted mid-call too often is failed as poison.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const stream = uniqueStream("retry");
const slowlane = useSlowlane({
  environment: env,
  config: {
    nats: { stream, ackWait: "2s" },
    defaults: { timeout: "5s", ttl: "5m", attempts: 3, backoff: { initial: "100ms", factor: 1, jitter: false } },
  },
  routes: [
    { name: "flaky", path: "/flaky", retryOn: [502, 503] },
    { name: "patient", path: "/flaky/**", retryOn: [503], attempts: 2, backoff: { initial: "50ms", max: "10s" } },
  ],
});
const inspector = useJetStreamInspector(env);
let jsm: JetStreamManager;

beforeAll(async () => {
  jsm = await jetstreamManager(inspector.nc);
});

interface StatusBody {
  status: string;
  attempts: number;
  error?: { code: string; message: string; upstreamStatus?: number };
  history?: { attempt: number; startedAt: string; durationMs: number; outcome: string }[];
  responseStatus?: number;
}

const waitFinal = async (id: string) => (await slowlane.waitFinal(id, 20_000)).body as StatusBody;

describe("retryOn", () => {
  it("retries a listed status with the route's backoff until the backend answers", async () => {
    const id = await slowlane.submit("post", "/flaky?key=twice&fails=2&status=502", { body: "payload" });
    const done = await waitFinal(id);
    expect(done).toMatchObject({ status: "completed", attempts: 3, responseStatus: 200 });
    expect(done.history?.map((h) => h.outcome)).toEqual(["502", "502", "200"]);
    expect(env.backend.callsTo("/flaky?key=twice&")).toHaveLength(3);
    const result = await slowlane.result(id);
    expect(result.body).toEqual({ key: "twice", calls: 3 });
  });

  it("replays a status not listed as the result, after one call", async () => {
    const id = await slowlane.submit("post", "/flaky?key=once500&fails=1&status=500", { body: "payload" });
    const done = await waitFinal(id);
    expect(done).toMatchObject({ status: "completed", attempts: 1, responseStatus: 500 });
    const result = await slowlane.result(id);
    expect(result.status).toBe(500);
    expect(result.text).toBe("try again");
    expect(env.backend.callsTo("/flaky?key=once500&")).toHaveLength(1);
  });

  it("waits as long as the backend's Retry-After on a 503 asks, not the shorter backoff", async () => {
    const id = await slowlane.submit("post", "/flaky/x?key=later&fails=1&status=503&retryAfter=2", { body: "payload" });
    const done = await waitFinal(id);
    expect(done).toMatchObject({ status: "completed", attempts: 2 });
    const [first, second] = done.history ?? [];
    if (!first || !second) throw new Error("expected two attempts in the history");
    const gapMs = Date.parse(second.startedAt) - (Date.parse(first.startedAt) + first.durationMs);
    // The backoff alone would have retried after 50 ms.
    expect(gapMs).toBeGreaterThanOrEqual(1_900);
  });
});

describe("a job that runs out of attempts", () => {
  it("ends failed with its reason and history, its request dead-lettered and its message out of the queue", async () => {
    const id = await slowlane.submit("post", "/flaky/y?key=never&fails=100&status=503", { body: "payload" });
    const done = await waitFinal(id);
    expect(done).toMatchObject({
      status: "failed",
      attempts: 2,
      error: { code: "SLOWLANE_UPSTREAM_STATUS", upstreamStatus: 503 },
    });
    expect(done.history?.map((h) => h.outcome)).toEqual(["503", "503"]);
    expect(env.backend.callsTo("/flaky/y?key=never&")).toHaveLength(2);

    const result = await slowlane.result(id);
    expect(result.status).toBe(502);
    expect(result.headers["content-type"]).toBe("application/problem+json");
    expect(result.body).toMatchObject({ code: "SLOWLANE_UPSTREAM_STATUS", upstreamStatus: 503, attempts: 2 });

    const dead = await jsm.streams.getMessage(`${stream}_dead`, { last_by_subj: `${stream}.dead.patient.${id}` });
    expect(dead?.string()).toBe("payload");
    // Terminated, so the work queue drops it (term is not acknowledged: wait for it).
    await waitFor(async () => {
      const queued = await jsm.streams.getMessage(stream, { last_by_subj: `${stream}.jobs.patient.${id}` });
      return queued === null;
    });
  });

  it("fails a job interrupted mid-call too often as poison, without calling the backend again", async () => {
    // A second deployment sharing the stream, with no worker yet: the job waits in the queue.
    const config = makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream: uniqueStream("poison"), ackWait: "2s" },
      routes: [{ name: "work", path: "/work" }],
    });
    const proxy = await startApp(config, "proxy");
    await proxy.app.ready;
    try {
      const res = await proxy.send("post", "/work?tag=poison", { body: "x" });
      const id = res.body.id as string;
      // What five workers killed mid-call leave behind: four interruptions counted, and the record of
      // the fifth start still `running`.
      const jobs = await new Kvm(inspector.nc).open(`${config.nats.stream}_jobs`);
      const now = Date.now();
      const record = { id, route: "work", status: "running", attempts: 5, failures: 0, interruptions: 4, createdAt: now, updatedAt: now };
      await jobs.put(id, JSON.stringify(record));

      const worker = await startApp(config, "worker");
      try {
        const done = await waitFor(async () => {
          const status = await proxy.status(id);
          return status.status === 303 ? (status.body as StatusBody) : undefined;
        });
        expect(done).toMatchObject({ status: "failed", error: { code: "SLOWLANE_JOB_INTERRUPTED" } });
        expect(env.backend.callsTo("/work?tag=poison")).toHaveLength(0);
      } finally {
        await worker.close();
      }
    } finally {
      await proxy.close();
    }
  });
});
