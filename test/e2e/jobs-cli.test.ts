/**
 * `slowlane jobs` as ops run it: the built CLI as a child process against a real nats-server.
 * First on failed jobs built by hand (the way a worker leaves them), then the real flow: a job
 * that fails because its backend is down is retried once the backend is up, and completes.
 * Needs `npm run build` first (npm test does it).
 */
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getDeadLetter, putDeadLetter } from "../../src/jobs/dead-letters.js";
import { decodeEnvelope, toEnvelopeHeaders } from "../../src/jobs/envelope.js";
import type { JobRequest } from "../../src/jobs/envelope.js";
import { createJobId } from "../../src/jobs/job-id.js";
import { TEST_KEYS } from "../helpers/keys.js";
import { provision } from "../../src/nats/provision.js";
import type { JetStreamContext } from "../../src/nats/context.js";
import { JobStatus } from "../../src/jobs/record.js";
import { getRecord, putRecord } from "../helpers/records.js";
import { startTestBackend } from "../helpers/backend.js";
import type { TestBackend } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { JOBS } from "../helpers/jobs.js";
import { makeConfig, spawnSlowlane, uniqueStream, waitForLog, writeConfigFile } from "../helpers/slowlane.js";
import type { ChildSlowlane } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const CLI = fileURLToPath(new URL("../../dist/cli.js", import.meta.url));
const env = useNatsAndBackend();

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node dist/cli.js …args`, with stdout and stderr kept apart. */
function slowlane(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], {
    // An empty NATS_URL is ignored: the config file's servers count, whatever the caller's environment says.
    env: { ...process.env, NATS_URL: "", ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("slowlane jobs on hand-made jobs", () => {
  const encoder = new TextEncoder();
  const stream = uniqueStream("jobscli");
  let nc: NatsConnection;
  let ctx: JetStreamContext;
  let file: string;
  let failed: JobRequest;
  let running: string;
  let waiting: JobRequest;

  async function accept(route: string, body: string): Promise<JobRequest> {
    const job: JobRequest = { id: createJobId(TEST_KEYS), route, method: "POST", url: `/${route}/q3`, headers: ["x-tenant", "acme"], createdAt: Date.now() };
    await ctx.js.publish(ctx.names.jobSubject(route, job.id), encoder.encode(body), { msgID: job.id, headers: toEnvelopeHeaders(job) });
    return job;
  }

  beforeAll(async () => {
    const doc = {
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream },
      routes: [
        { name: "reports", methods: ["POST"], path: "/reports/**", attempts: 2 },
        { name: "exports", path: "/exports/**" },
      ],
    };
    file = writeConfigFile(doc);
    nc = await connect({ servers: env.nats.url });
    ctx = await provision(nc, makeConfig(doc), { consumers: true });

    // A job whose two attempts failed, left as a worker leaves it.
    failed = await accept("reports", "the body");
    const consumer = await ctx.js.consumers.get(stream, ctx.names.consumer("reports"));
    const msg = await consumer.next({ expires: 5_000 });
    if (!msg) throw new Error("no message");
    await putDeadLetter(ctx, failed, msg);
    const now = Date.now();
    await putRecord(ctx, {
      id: failed.id,
      route: "reports",
      status: JobStatus.Failed,
      attempts: 2,
      failures: 2,
      createdAt: failed.createdAt,
      updatedAt: now,
      expiresAt: now + 3_600_000,
      error: { code: "SLOWLANE_UPSTREAM_UNREACHABLE", message: "connect ECONNREFUSED 127.0.0.1:9" },
    });
    msg.term();

    running = createJobId(TEST_KEYS);
    await putRecord(ctx, { id: running, route: "exports", status: JobStatus.Running, attempts: 1, createdAt: now, updatedAt: now });
    waiting = await accept("exports", "later");
  });

  afterAll(async () => {
    await nc?.close();
  });

  it("list --status failed shows the failed job in a table", async () => {
    const list = await slowlane(["jobs", "list", "--status", "failed", "--config", file]);
    expect(list.stderr).toBe("");
    expect(list.code).toBe(0);
    const lines = list.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^ID\s+ROUTE\s+STATUS\s+ATTEMPTS\s+UPDATED\s+ERROR$/);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(new RegExp(`^${failed.id}\\s+reports\\s+failed\\s+2\\s+\\d{4}-\\d\\d-\\d\\dT\\S+Z\\s+SLOWLANE_UPSTREAM_UNREACHABLE: connect ECONNREFUSED`));
  });

  it("list --json prints every job as a JSON line, queued jobs no worker started included", async () => {
    const list = await slowlane(["--config", file, "jobs", "list", "--json"]);
    expect(list.code).toBe(0);
    const jobs = list.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(jobs.find((j) => j.id === failed.id)).toMatchObject({ status: "failed", attempts: 2, error: { code: "SLOWLANE_UPSTREAM_UNREACHABLE" } });
    expect(jobs.find((j) => j.id === running)).toMatchObject({ status: "running", route: "exports" });
    expect(jobs.find((j) => j.id === waiting.id)).toEqual({ id: waiting.id, route: "exports", status: "queued", attempts: 0, started: false });
    const exportsOnly = await slowlane(["jobs", "list", "--route", "exports", "--json", "--config", file]);
    expect(exportsOnly.stdout.trimEnd().split("\n")).toHaveLength(2);
  });

  it("show prints the record, the dead letter and whether the job is in the queue", async () => {
    const show = await slowlane(["jobs", "show", failed.id, "--config", file]);
    expect(show.code).toBe(0);
    const shown = JSON.parse(show.stdout) as Record<string, unknown>;
    expect(shown).toMatchObject({ id: failed.id, route: "reports", status: "failed", inQueue: false, deadLetter: { bodyBytes: 8 } });
    expect(shown.record).toMatchObject({ status: "failed", failures: 2, error: { code: "SLOWLANE_UPSTREAM_UNREACHABLE" } });
    const queued = JSON.parse((await slowlane(["jobs", "show", waiting.id, "--config", file])).stdout) as Record<string, unknown>;
    expect(queued).toMatchObject({ status: "queued", inQueue: true, deadLetter: null, record: null });
  });

  it("retry requeues a failed job: message back on its subject, record queued, dead letter gone", async () => {
    const retry = await slowlane(["jobs", "retry", failed.id, "--config", file]);
    expect(retry.stderr).toBe("");
    expect(retry.code).toBe(0);
    expect(retry.stdout).toContain(`requeued ${failed.id}`);

    const back = await ctx.jsm.streams.getMessage(stream, { last_by_subj: ctx.names.jobSubject("reports", failed.id) });
    expect(back).not.toBeNull();
    expect(decodeEnvelope(back!.header)).toEqual(failed);
    expect(new TextDecoder().decode(back!.data)).toBe("the body");
    const record = await getRecord(ctx, failed.id);
    expect(record).toMatchObject({ status: "queued", attempts: 2, failures: 0, retries: 1 });
    expect(record?.error).toBeUndefined();
    expect(await getDeadLetter(ctx, "reports", failed.id)).toBeUndefined();

    // Now queued, it cannot be retried again.
    const again = await slowlane(["jobs", "retry", failed.id, "--config", file]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`job ${failed.id} is queued, not failed`);
  });

  it("retry of a job that is not failed, or unknown, exits 1 with the reason", async () => {
    const notFailed = await slowlane(["jobs", "retry", running, "--config", file]);
    expect(notFailed.code).toBe(1);
    expect(notFailed.stderr).toContain(`job ${running} is running, not failed: only failed jobs can be retried`);
    const notStarted = await slowlane(["jobs", "retry", waiting.id, "--config", file]);
    expect(notStarted.code).toBe(1);
    expect(notStarted.stderr).toContain("no worker has started it yet");
    const unknown = createJobId(TEST_KEYS);
    const none = await slowlane(["jobs", "retry", unknown, "--config", file]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`no such job: ${unknown}`);
    const show = await slowlane(["jobs", "show", unknown, "--config", file]);
    expect(show.code).toBe(1);
    expect(show.stderr).toContain("no such job");
  });

  it("bad usage exits 2 with the jobs usage", async () => {
    for (const args of [["jobs"], ["jobs", "list", "--status", "bogus"], ["jobs", "retry"], ["jobs", "show", "a", "b"], ["jobs", "frob"], ["jobs", "list", "--all-failed"]]) {
      const r = await slowlane([...args, "--config", file]);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toContain("usage: slowlane jobs");
    }
    const help = await slowlane(["jobs", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("retry --all-failed");
  });

  it("says NATS is unreachable, or that nothing is provisioned, and exits 1 without creating anything", async () => {
    const port = await closedPort();
    const started = Date.now();
    const down = await slowlane(["jobs", "list", "--config", file], { NATS_URL: `nats://127.0.0.1:${port}` });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`cannot connect to NATS at nats://127.0.0.1:${port}: connection refused`);
    expect(Date.now() - started).toBeLessThan(15_000);

    const other = uniqueStream("none");
    const empty = await slowlane(["jobs", "list", "--config", writeConfigFile({ nats: { servers: env.nats.url, stream: other } })]);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain(`nothing provisioned for stream prefix ${other} yet`);
    await expect(ctx.jsm.streams.info(other)).rejects.toThrow();
  });
});

describe("slowlane jobs retry in the real flow", () => {
  let run: ChildSlowlane | undefined;
  let backend: TestBackend | undefined;

  afterAll(async () => {
    await run?.kill("SIGKILL");
    await backend?.close();
  });

  it("a job that failed because its backend was down completes once retried with the backend up", async () => {
    const port = await closedPort();
    const file = writeConfigFile({
      listen: "127.0.0.1:0",
      upstream: `http://127.0.0.1:${port}`,
      nats: { servers: env.nats.url, stream: uniqueStream("jobsflow"), ackWait: "2s" },
      routes: [{ name: "reports", methods: ["POST"], path: "/reports/**", attempts: 1, timeout: "5s", ttl: "5m", retryAfter: "1s" }],
    });
    run = spawnSlowlane("run", file);
    const url = (await waitForLog(run.logs, "proxy listening")).url as string;
    await waitForLog(run.logs, "forwarder started");

    const accepted = await request(url).post("/reports/q3?year=2026").set("content-type", "text/plain").send("payload");
    expect(accepted.status).toBe(202);
    const id = (accepted.body as { id: string }).id;
    // Polled until failed: the proxy now has the failed record in its cache of finished jobs.
    await waitFor(async () => (await request(url).get(`${JOBS}/${id}`)).body?.status === "failed", { what: "the job to fail" });

    const list = await slowlane(["jobs", "list", "--status", "failed", "--config", file]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`${id}\\s+reports\\s+failed\\s+1\\s`));
    const shown = JSON.parse((await slowlane(["jobs", "show", id, "--config", file])).stdout) as { deadLetter: unknown };
    expect(shown.deadLetter).not.toBeNull();

    backend = await startTestBackend(port);
    const retry = await slowlane(["jobs", "retry", id, "--config", file]);
    expect(retry.stderr).toBe("");
    expect(retry.code).toBe(0);

    const done = await waitFor(
      async () => {
        const res = await request(url).get(`${JOBS}/${id}`);
        return res.body?.status === "completed" ? res : undefined;
      },
      { what: "the retried job to complete" },
    );
    expect(done.status).toBe(303);
    expect(done.body).toMatchObject({ attempts: 2, responseStatus: 200 });
    const result = await request(url).get(`${JOBS}/${id}/result`);
    expect(result.status).toBe(200);
    expect(result.body).toMatchObject({ method: "POST", url: "/reports/q3?year=2026" });
    expect(backend.callsTo("/reports/q3")).toHaveLength(1);
    expect(backend.calls[0]?.body.toString()).toBe("payload");

    const after = JSON.parse((await slowlane(["jobs", "show", id, "--config", file])).stdout) as Record<string, unknown>;
    expect(after).toMatchObject({ status: "completed", deadLetter: null, inQueue: false, record: { retries: 1 } });
  });
});
