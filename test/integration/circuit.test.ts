/**
 * A backend outage pauses the route instead of failing its queue (issue 11 §1): while the backend
 * cannot be reached, the route's circuit is open in the worker, its jobs wait uncounted and one
 * call at a time probes the backend; the first answer closes it. The state shows in /metrics, in
 * the log and in `slowlane jobs list`. A route's `deadline` still fails a job that waited too long.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runJobsCommand } from "../../src/ops/jobs-command.js";
import { startTestBackend } from "../helpers/backend.js";
import type { TestBackend } from "../helpers/backend.js";
import { JOBS, waitFinal } from "../helpers/jobs.js";
import { getFreePort, startNatsServer } from "../helpers/nats.js";
import type { NatsServer } from "../helpers/nats.js";
import { makeConfig, startApp, uniqueStream, writeConfigFile } from "../helpers/slowlane.js";
import type { LogLine, TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

let nats: NatsServer;
let nc: NatsConnection;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  for (const close of closers.reverse()) await close();
  await nc?.close();
  await nats?.close();
});

/** The route settings of these tests: short backoffs, so an outage "longer than attempts × backoff.max" is short. */
const BACKOFF = { initial: "100ms", max: "400ms", factor: 2, jitter: false };

function configDoc(stream: string, backendPort: number, routes: Record<string, unknown>[]) {
  return {
    listen: "127.0.0.1:0",
    upstream: `http://127.0.0.1:${backendPort}`,
    nats: { servers: nats.url, stream, ackWait: "2s" },
    defaults: { timeout: "5s", ttl: "10m", backoff: BACKOFF },
    routes,
  };
}

async function start(doc: Record<string, unknown>): Promise<TestApp> {
  const app = await startApp(makeConfig(doc));
  closers.push(() => app.close());
  await app.app.ready;
  return app;
}

async function submit(app: TestApp, path: string): Promise<string> {
  const res = await request(app.url).post(path).send("payload");
  expect(res.status).toBe(202);
  return res.body.id as string;
}

/** The value of a metric sample with exactly these labels in a /metrics text, or undefined. */
async function metric(app: TestApp, name: string, labels: string): Promise<number | undefined> {
  const text = (await request(app.app.adminUrl).get("/metrics")).text;
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.split(" ")[1]);
}

/** `slowlane jobs list` run in-process against the same NATS and prefix; stdout and stderr lines. */
async function jobsList(stream: string): Promise<{ out: string[]; err: string[] }> {
  const file = writeConfigFile({ nats: { servers: nats.url, stream } });
  const out: string[] = [];
  const err: string[] = [];
  const code = await runJobsCommand(["list", "--config", file], {
    defaultConfigFile: file,
    env: {},
    output: { out: (l) => out.push(l), err: (l) => err.push(l) },
  });
  expect(code).toBe(0);
  return { out, err };
}

const logsOf = (app: TestApp, msg: string, route: string): LogLine[] => app.logs.filter((l) => l.msg === msg && l.route === route);

describe("a backend outage longer than attempts × backoff.max", () => {
  let backend: TestBackend | undefined;
  closers.push(async () => backend?.close());

  it("holds the queue: every job completes once the backend is back, none fails, concurrency holds", { timeout: 60_000 }, async () => {
    const port = await getFreePort();
    const stream = uniqueStream("outage");
    const route = { name: "outage", path: "/slow", concurrency: 2, attempts: 2 };
    const app = await start(configDoc(stream, port, [route]));

    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await submit(app, `/slow?ms=200&n=${i}`));

    // Down: the first unreachable call opens the circuit and the route is paused, visibly.
    const opened = await waitFor(() => logsOf(app, "backend unreachable: route paused (circuit open in this worker)", "outage")[0], {
      what: "the circuit to open",
    });
    expect(opened.level).toBe(40);
    expect(await metric(app, "slowlane_route_circuit_open", 'route="outage"')).toBe(1);
    const listed = await waitFor(async () => {
      const { out } = await jobsList(stream);
      return out.find((l) => l.startsWith("route outage is paused"));
    }, { what: "jobs list to show the paused route" });
    expect(listed).toMatch(/circuit open in 1 worker since /);

    // Stay down past attempts × backoff.max (2 × 400 ms), with probes failing all along.
    const openedAt = Number(opened.time);
    await waitFor(() => logsOf(app, "probe: the backend is still unreachable", "outage").length >= 4 && Date.now() - openedAt > 3 * 400, {
      timeoutMs: 20_000,
      what: "probes to keep failing for longer than attempts × backoff.max",
    });
    for (const id of ids) {
      const status = await request(app.url).get(`${JOBS}/${id}`).redirects(0);
      expect(status.status, `job ${id} while the backend is down`).toBe(202);
    }

    // Back: every job completes, none failed, and never more than `concurrency` calls at once.
    backend = await startTestBackend(port);
    for (const id of ids) {
      const done = await waitFinal(app.url, id, 30_000);
      expect(done.body, `job ${id}`).toMatchObject({ status: "completed", responseStatus: 200 });
    }
    expect(backend.callsTo("/slow?ms=200&")).toHaveLength(8);
    expect(backend.maxInFlight).toBeLessThanOrEqual(2);

    expect(logsOf(app, "backend answered: route resumed (circuit closed)", "outage")).toHaveLength(1);
    expect(await metric(app, "slowlane_route_circuit_open", 'route="outage"')).toBe(0);
    await waitFor(async () => !(await jobsList(stream)).out.some((l) => l.startsWith("route outage is paused")), {
      what: "jobs list to stop showing the route as paused",
    });
    // An unreachable call while the circuit was open cost its job nothing: at most the opening call counted.
    const failedAttempts = app.logs.filter((l) => l.msg === "attempt failed" && l.route === "outage");
    expect(failedAttempts.length).toBeLessThanOrEqual(1);
  });
});

describe("the deadline", () => {
  it("fails a job that waited past it while the route was paused, without calling the backend", { timeout: 30_000 }, async () => {
    const port = await getFreePort();
    const stream = uniqueStream("paused");
    const app = await start(configDoc(stream, port, [{ name: "stale", path: "/stale/**", deadline: "1s", attempts: 100 }]));

    await submit(app, "/stale/opener");
    await waitFor(() => logsOf(app, "backend unreachable: route paused (circuit open in this worker)", "stale")[0], {
      what: "the circuit to open",
    });
    const id = await submit(app, "/stale/late");
    const done = await waitFinal(app.url, id, 20_000);
    expect(done.body).toMatchObject({ status: "failed", attempts: 0, error: { code: "SLOWLANE_DEADLINE_EXCEEDED" } });
    expect(done.body.history).toBeUndefined();

    const result = await request(app.url).get(`${JOBS}/${id}/result`);
    expect(result.status).toBe(504);
    expect(result.headers["content-type"]).toBe("application/problem+json");
    expect(result.body).toMatchObject({ code: "SLOWLANE_DEADLINE_EXCEEDED" });
    const jsm = await jetstreamManager(nc);
    const dead = await jsm.streams.getMessage(`${stream}_dead`, { last_by_subj: `${stream}.dead.stale.${id}` });
    expect(dead?.string()).toBe("payload");
    // The opener is still waiting for the backend: the deadline bounds the wait before a first call only.
    expect(logsOf(app, "job failed", "stale").map((l) => l.job)).toEqual([id]);
  });
});
