/**
 * What a worker takes from the queue is checked before it becomes a backend URL (issue 10 §6):
 * anyone who can publish to the work queue must not make a worker call another host. A request
 * that cannot be sent (no envelope, a method that is not a token, a path that does not start with
 * one `/`) fails its job to the dead letters; it is never silently dropped and never sent.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { jetstream } from "@nats-io/jetstream";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toEnvelopeHeaders } from "../../src/jobs/envelope.js";
import type { JobRequest } from "../../src/jobs/envelope.js";
import { createJobId } from "../../src/jobs/job-id.js";
import { startTestBackend } from "../helpers/backend.js";
import type { TestBackend } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { JOBS, waitFinal } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";

const env = useNatsAndBackend();
const inspector = useJetStreamInspector(env);
const stream = uniqueStream("stored");
let app: TestApp;
let evil: TestBackend;
let jsm: JetStreamManager;

beforeAll(async () => {
  evil = await startTestBackend();
  app = await startApp(
    makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream, ackWait: "2s" },
      defaults: { timeout: "5s", ttl: "10m", attempts: 3, backoff: { initial: "100ms" } },
      routes: [{ name: "jobs", path: "/jobs/**" }],
    }),
  );
  await app.app.ready;
  jsm = await jetstreamManager(inspector.nc);
});
afterAll(async () => {
  await app?.close();
  await evil?.close();
});

/** Publishes a message to a job's subject as anyone with access to NATS could; returns the job id. */
async function publishRaw(fields: Partial<JobRequest> | undefined): Promise<string> {
  const id = createJobId();
  const job: JobRequest = { id, route: "jobs", method: "POST", url: "/jobs/x", headers: [], createdAt: Date.now(), ...fields };
  const js = jetstream(inspector.nc);
  await js.publish(`${stream}.jobs.jobs.${id}`, new TextEncoder().encode("body"), fields === undefined ? {} : { headers: toEnvelopeHeaders(job) });
  return id;
}

async function expectRejected(id: string): Promise<void> {
  const done = await waitFinal(app.url, id);
  expect(done.body).toMatchObject({ status: "failed", attempts: 0, error: { code: "SLOWLANE_STORED_REQUEST_INVALID" } });
  const result = await request(app.url).get(`${JOBS}/${id}/result`);
  expect(result.status).toBe(500);
  expect(result.body).toMatchObject({ code: "SLOWLANE_STORED_REQUEST_INVALID" });
  const dead = await jsm.streams.getMessage(`${stream}_dead`, { last_by_subj: `${stream}.dead.jobs.${id}` });
  expect(dead?.string()).toBe("body");
  expect(app.logs.some((l) => l.msg === "the queued request cannot be sent; failing the job" && l.job === id)).toBe(true);
}

describe("a queued request a worker cannot send", () => {
  it("a URL that would make the backend's address a user name (`@host/`) never reaches that host", async () => {
    const id = await publishRaw({ url: `@127.0.0.1:${evil.port}/stolen` });
    await expectRejected(id);
    expect(evil.calls).toHaveLength(0);
    expect(env.backend.calls.filter((c) => c.url.includes("stolen"))).toHaveLength(0);
  });

  it.each([
    ["a path starting with //", { url: `//127.0.0.1:${0}/x` }],
    ["a path with a space", { url: "/jobs/x HTTP/1.1\r\nHost: evil" }],
    ["a method that is not a token", { method: "GET /admin" }],
    ["an empty method", { method: "" }],
  ])("%s fails to the dead letters", async (_what, fields) => {
    const id = await publishRaw(fields);
    await expectRejected(id);
  });

  it("a message without an envelope fails the job its subject names", async () => {
    const id = await publishRaw(undefined);
    await expectRejected(id);
  });

  it("a valid request next to them is sent as usual", async () => {
    const id = await publishRaw({ url: "/jobs/fine?tag=stored" });
    const done = await waitFinal(app.url, id);
    expect(done.body).toMatchObject({ status: "completed", responseStatus: 200 });
    expect(env.backend.callsTo("/jobs/fine?tag=stored")).toHaveLength(1);
  });
});
