/**
 * Dead letters and the retry of failed jobs, against a real nats-server. A failed job is built the
 * way a worker leaves one: its message pulled from the route's consumer, a dead letter put, the
 * `failed` record written, the message terminated.
 */
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deleteDeadLetter, getDeadLetter, putDeadLetter } from "../../src/jobs/dead-letters.js";
import { decodeEnvelope, toEnvelopeHeaders } from "../../src/jobs/envelope.js";
import type { JobRequest } from "../../src/jobs/envelope.js";
import { createJobId } from "../../src/jobs/job-id.js";
import { TEST_KEYS } from "../helpers/keys.js";
import { NotProvisionedError } from "../../src/errors.js";
import { openJetStream } from "../../src/nats/open.js";
import { provision } from "../../src/nats/provision.js";
import type { JetStreamContext } from "../../src/nats/context.js";
import { JobsCommandError } from "../../src/errors.js";
import { retryJob } from "../../src/jobs/requeue.js";
import { listJobs, retryFailedJobs, showJob } from "../../src/ops/job-queries.js";
import { JobStatus } from "../../src/jobs/record.js";
import type { JobRecord } from "../../src/jobs/record.js";
import { createJobStore, requestObjectName } from "../../src/jobs/store.js";
import { getRecord, putRecord } from "../helpers/records.js";
import { startNatsServer } from "../helpers/nats.js";
import type { NatsServer } from "../helpers/nats.js";
import { makeConfig, uniqueStream } from "../helpers/slowlane.js";

let nats: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  await nc?.close();
  await nats?.close();
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function setUp(label: string): Promise<JetStreamContext> {
  const config = makeConfig({
    nats: { servers: nats.url, stream: uniqueStream(label) },
    routes: [
      { name: "reports", methods: ["POST"], path: "/reports/**", attempts: 2 },
      { name: "exports", path: "/exports/**" },
    ],
  });
  return provision(nc, config, { consumers: true });
}

/** Accepts a job as the proxy does: one publish of the body with the envelope, msg id = job id. */
async function accept(ctx: JetStreamContext, route: string, body: string): Promise<JobRequest> {
  const job: JobRequest = {
    id: createJobId(TEST_KEYS),
    route,
    method: "POST",
    url: `/${route}/q3?year=2026`,
    headers: ["content-type", "text/plain", "x-tenant", "acme"],
    createdAt: Date.now(),
  };
  const headers = toEnvelopeHeaders(job);
  headers.set("X-Extra", "kept");
  await ctx.js.publish(ctx.names.jobSubject(route, job.id), encoder.encode(body), { msgID: job.id, headers });
  return job;
}

/** What a worker does to a job whose last attempt failed: dead letter, failed record, term. */
async function failNextJob(ctx: JetStreamContext, route: string, previous?: JobRecord): Promise<JobRecord> {
  const consumer = await ctx.js.consumers.get(ctx.names.stream, ctx.names.consumer(route));
  const msg = await consumer.next({ expires: 5_000 });
  if (!msg) throw new Error("no message to fail");
  const job = decodeEnvelope(msg.headers);
  if (!job) throw new Error("not an envelope");
  await putDeadLetter(ctx, job, msg);
  const now = Date.now();
  const record: JobRecord = {
    ...previous,
    id: job.id,
    route,
    status: JobStatus.Failed,
    attempts: (previous?.attempts ?? 0) + 2,
    failures: 2,
    createdAt: job.createdAt,
    updatedAt: now,
    expiresAt: now + 3_600_000,
    error: { code: "SLOWLANE_UPSTREAM_UNREACHABLE", message: "connect ECONNREFUSED 127.0.0.1:9" },
  };
  await putRecord(ctx, record);
  msg.term();
  return record;
}

async function record(ctx: JetStreamContext, id: string): Promise<Record<string, unknown> | undefined> {
  const r = await getRecord(ctx, id);
  return r as Record<string, unknown> | undefined;
}

describe("dead letters", () => {
  it("keep the original headers (not Nats-Msg-Id) and payload; get and delete by route and id", async () => {
    const ctx = await setUp("dl");
    const job = await accept(ctx, "reports", "the body");
    const consumer = await ctx.js.consumers.get(ctx.names.stream, ctx.names.consumer("reports"));
    const msg = await consumer.next({ expires: 5_000 });
    expect(msg?.headers?.get("Nats-Msg-Id")).toBe(job.id);

    await putDeadLetter(ctx, job, msg!);
    const letter = await getDeadLetter(ctx, "reports", job.id);
    expect(letter).toBeDefined();
    expect(decoder.decode(letter!.data)).toBe("the body");
    expect(decodeEnvelope(letter!.headers)).toEqual(job);
    expect(letter!.headers?.get("X-Extra")).toBe("kept");
    expect(letter!.headers?.has("Nats-Msg-Id")).toBe(false);
    expect(Math.abs(letter!.deadAt - Date.now())).toBeLessThan(10_000);
    msg!.term();

    expect(await getDeadLetter(ctx, "exports", job.id)).toBeUndefined();
    expect(await deleteDeadLetter(ctx, "reports", job.id)).toBe(true);
    expect(await getDeadLetter(ctx, "reports", job.id)).toBeUndefined();
    expect(await deleteDeadLetter(ctx, "reports", job.id)).toBe(false);
  });

  it("a second dead letter of the same job replaces the first, even within the duplicate window", async () => {
    const ctx = await setUp("dl");
    const job = await accept(ctx, "reports", "v1");
    const consumer = await ctx.js.consumers.get(ctx.names.stream, ctx.names.consumer("reports"));
    const msg = await consumer.next({ expires: 5_000 });
    await putDeadLetter(ctx, job, msg!);
    const first = await getDeadLetter(ctx, "reports", job.id);
    await putDeadLetter(ctx, job, { headers: msg!.headers, data: encoder.encode("v2") });
    const second = await getDeadLetter(ctx, "reports", job.id);
    msg!.term();

    expect(second!.seq).toBeGreaterThan(first!.seq);
    expect(decoder.decode(second!.data)).toBe("v2");
    const info = await ctx.jsm.streams.info(ctx.names.deadStream);
    expect(info.state.messages).toBe(1);
    // Deleting by the old sequence keeps the newer dead letter.
    expect(await deleteDeadLetter(ctx, "reports", job.id, first!.seq)).toBe(false);
    expect(await getDeadLetter(ctx, "reports", job.id)).toBeDefined();
  });
});

describe("retrying a failed job", () => {
  it("requeues it: record queued (failures 0, no error, attempts kept), message back, dead letter gone", async () => {
    const ctx = await setUp("retry");
    const job = await accept(ctx, "reports", "retry me");
    const failed = await failNextJob(ctx, "reports");

    const result = await retryJob(ctx, job.id);
    expect(result).toMatchObject({ id: job.id, route: "reports", retries: 1 });
    expect(result.warning).toBeUndefined();

    const r = await record(ctx, job.id);
    expect(r).toMatchObject({ status: "queued", attempts: failed.attempts, failures: 0, retries: 1, createdAt: job.createdAt });
    expect(r).not.toHaveProperty("error");
    expect(r).not.toHaveProperty("expiresAt");

    const back = await ctx.jsm.streams.getMessage(ctx.names.stream, { last_by_subj: ctx.names.jobSubject("reports", job.id) });
    expect(back).not.toBeNull();
    expect(decoder.decode(back!.data)).toBe("retry me");
    expect(decodeEnvelope(back!.header)).toEqual(job);
    expect(back!.header.get("X-Extra")).toBe("kept");
    expect(back!.header.get("Nats-Msg-Id")).toBe(result.msgId);
    expect(await getDeadLetter(ctx, "reports", job.id)).toBeUndefined();

    // It fails again, and is retried again: a new msg id, so the duplicate window does not swallow it.
    const again = await failNextJob(ctx, "reports", (await getRecord(ctx, job.id))!);
    expect(again).toMatchObject({ retries: 1 });
    const second = await retryJob(ctx, job.id);
    expect(second.retries).toBe(2);
    expect(second.msgId).not.toBe(result.msgId);
    const info = await ctx.jsm.streams.info(ctx.names.stream, { subjects_filter: ctx.names.jobSubject("reports", job.id) });
    expect(info.state.messages).toBe(1);
  });

  it("refuses a job that is not failed, has no dead letter, is not started, or does not exist", async () => {
    const ctx = await setUp("refuse");
    const now = Date.now();
    const running = createJobId(TEST_KEYS);
    await putRecord(ctx, { id: running, route: "reports", status: JobStatus.Running, attempts: 1, createdAt: now, updatedAt: now });
    await expect(retryJob(ctx, running)).rejects.toThrow(`job ${running} is running, not failed`);

    const noLetter = createJobId(TEST_KEYS);
    await putRecord(ctx, {
      id: noLetter,
      route: "reports",
      status: JobStatus.Failed,
      attempts: 2,
      failures: 2,
      createdAt: now,
      updatedAt: now,
      error: { code: "SLOWLANE_UPSTREAM_TIMEOUT", message: "timed out" },
    });
    await expect(retryJob(ctx, noLetter)).rejects.toThrow(/has no dead letter/);
    expect(await record(ctx, noLetter)).toMatchObject({ status: "failed" });

    const waiting = await accept(ctx, "exports", "x");
    await expect(retryJob(ctx, waiting.id)).rejects.toThrow(/is queued \(no worker has started it yet\)/);
    await expect(retryJob(ctx, createJobId(TEST_KEYS))).rejects.toThrow(/^no such job/);
    await expect(retryJob(ctx, "not.a*job")).rejects.toBeInstanceOf(JobsCommandError);
  });

  it("refuses a job whose claim-checked request body has expired, and requeues one whose body is there", async () => {
    const ctx = await setUp("claim");
    const ids: string[] = [];
    for (const keepBody of [false, true]) {
      const accepted = await accept(ctx, "reports", "");
      const storedBody = keepBody
        ? await createJobStore(ctx).putRequestBody(accepted.id, new Blob(["big"]).stream())
        : { name: requestObjectName(accepted.id), bytes: 3 };
      const job: JobRequest = { ...accepted, storedBody };
      const consumer = await ctx.js.consumers.get(ctx.names.stream, ctx.names.consumer("reports"));
      const msg = await consumer.next({ expires: 5_000 });
      await putDeadLetter(ctx, job, { headers: toEnvelopeHeaders(job), data: new Uint8Array(0) });
      const now = Date.now();
      await putRecord(ctx, { id: job.id, route: "reports", status: JobStatus.Failed, attempts: 1, failures: 1, createdAt: now, updatedAt: now });
      msg!.term();
      ids.push(job.id);
    }
    await expect(retryJob(ctx, ids[0]!)).rejects.toThrow(/request body has expired/);
    expect(await retryJob(ctx, ids[1]!)).toMatchObject({ id: ids[1], retries: 1 });
  });

  it("puts the failed record back when the request cannot be requeued", async () => {
    const ctx = await setUp("restore");
    const job = await accept(ctx, "reports", "x");
    const failed = await failNextJob(ctx, "reports");
    // A real fault: the work-queue stream is gone, so the publish gets no PubAck.
    await ctx.jsm.streams.delete(ctx.names.stream);

    await expect(retryJob(ctx, job.id)).rejects.toThrow(/could not be requeued.*its record is failed again/);
    expect(await record(ctx, job.id)).toEqual(failed);
    expect(await getDeadLetter(ctx, "reports", job.id)).toBeDefined();
  });

  it("retries every failed job of a route, and reports the ones it cannot", async () => {
    const ctx = await setUp("all");
    const a = await accept(ctx, "reports", "a");
    await failNextJob(ctx, "reports");
    const b = await accept(ctx, "reports", "b");
    await failNextJob(ctx, "reports");
    const c = await accept(ctx, "exports", "c");
    await failNextJob(ctx, "exports");
    await deleteDeadLetter(ctx, "reports", b.id);

    const outcomes = await retryFailedJobs(ctx, "reports");
    expect(outcomes).toHaveLength(2);
    expect(outcomes.find((o) => o.id === a.id)).toMatchObject({ ok: true, retries: 1 });
    expect(outcomes.find((o) => o.id === b.id)).toMatchObject({ ok: false, reason: expect.stringMatching(/no dead letter/) });
    expect(await record(ctx, c.id)).toMatchObject({ status: "failed" });
  });
});

describe("listing and showing jobs", () => {
  it("lists records by status and route, and queued jobs that have no record yet", async () => {
    const ctx = await setUp("list");
    const failed = await accept(ctx, "reports", "f");
    await failNextJob(ctx, "reports");
    const waiting = await accept(ctx, "exports", "w");

    const all = await listJobs(ctx);
    expect(all.map((j) => [j.id, j.status])).toEqual([
      [failed.id, "failed"],
      [waiting.id, "queued"],
    ]);
    expect(all[1]?.record).toBeUndefined();
    expect((await listJobs(ctx, { status: "failed" })).map((j) => j.id)).toEqual([failed.id]);
    expect((await listJobs(ctx, { status: "queued" })).map((j) => j.id)).toEqual([waiting.id]);
    expect(await listJobs(ctx, { route: "exports", status: "failed" })).toEqual([]);
    expect((await listJobs(ctx, { route: "exports" })).map((j) => j.id)).toEqual([waiting.id]);
  });

  it("shows a job's record, queue and dead-letter state", async () => {
    const ctx = await setUp("show");
    const failed = await accept(ctx, "reports", "four");
    await failNextJob(ctx, "reports");
    const waiting = await accept(ctx, "exports", "w");

    const shown = await showJob(ctx, failed.id);
    expect(shown).toMatchObject({ id: failed.id, route: "reports", status: "failed", inQueue: false });
    expect(shown.deadLetter?.bodyBytes).toBe(4);
    expect(shown.record?.error?.code).toBe("SLOWLANE_UPSTREAM_UNREACHABLE");
    expect(await showJob(ctx, waiting.id)).toMatchObject({ route: "exports", status: "queued", inQueue: true, record: undefined });
    await expect(showJob(ctx, createJobId(TEST_KEYS))).rejects.toThrow(/^no such job/);
  });
});

describe("opening JetStream state for ops", () => {
  it("says nothing is provisioned for an unknown prefix, and opens an existing one without changing it", async () => {
    const prefix = uniqueStream("open");
    await expect(openJetStream(nc, prefix)).rejects.toThrow(NotProvisionedError);
    await expect(openJetStream(nc, prefix)).rejects.toThrow(`nothing provisioned for stream prefix ${prefix} yet`);

    const ctx = await provision(nc, makeConfig({ nats: { servers: nats.url, stream: prefix } }), { consumers: true });
    const before = await ctx.jsm.streams.info(`KV_${prefix}_jobs`);
    const opened = await openJetStream(nc, prefix);
    expect(opened.names.stream).toBe(prefix);
    await opened.jobs.put("k", encoder.encode("v"));
    expect((await ctx.jobs.get("k"))?.string()).toBe("v");
    expect((await ctx.jsm.streams.info(`KV_${prefix}_jobs`)).config).toEqual(before.config);
  });
});
