/**
 * The admin server over HTTP, against a real nats-server and backend: liveness, readiness (and
 * readiness following NATS away and back), and the Prometheus metrics counting real traffic.
 */
import request from "supertest";
import { beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const slowlane = useSlowlane({
  environment: env,
  stream: "admin",
  config: {
    admin: { listen: "127.0.0.1:0" },
    nats: { ackWait: "2s" },
    defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
  },
  routes: [{ name: "work", methods: ["POST"], path: "/slow" }],
});
let admin: string;

beforeAll(() => {
  admin = slowlane.app.adminUrl;
});

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text → samples (enough of the format for slowlane's own metrics). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key as string] = value as string;
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of the samples named `name` whose labels include `labels`; undefined when there is none. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return found.length === 0 ? undefined : found.reduce((sum, s) => sum + s.value, 0);
}

async function scrape(): Promise<Sample[]> {
  const res = await request(admin).get("/metrics");
  expect(res.status).toBe(200);
  expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseMetrics(res.text);
}

describe("liveness and readiness", () => {
  it("GET /healthz is 200 {status: ok}", async () => {
    const res = await request(admin).get("/healthz");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: "ok" });
  });

  it("GET /readyz is 200 with every check ok once connected and set up", async () => {
    const res = await request(admin).get("/readyz");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: "ok", checks: { config: "ok", nats: "ok", jetstream: "ok" } });
  });

  it("answers other paths 404 and other methods 405, as problem+json", async () => {
    const missing = await request(admin).get("/nope");
    expect(missing.status).toBe(404);
    expect(missing.headers["content-type"]).toBe("application/problem+json");
    expect(missing.body).toMatchObject({ status: 404, code: "SLOWLANE_NOT_FOUND" });

    const post = await request(admin).post("/metrics").send("x");
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe("GET, HEAD");
    expect(post.body).toMatchObject({ status: 405, code: "SLOWLANE_METHOD_NOT_ALLOWED" });
  });

  it("is not served by the proxy: /healthz there is passed through to the backend", async () => {
    await request(slowlane.url).get("/healthz");
    expect(env.backend.callsTo("/healthz")).toHaveLength(1);
  });
});

describe("GET /metrics", () => {
  it("names every slowlane metric and the process' default ones", async () => {
    const text = (await request(admin).get("/metrics")).text;
    for (const name of [
      "slowlane_http_requests_total",
      "slowlane_accept_duration_seconds",
      "slowlane_jobs_accepted_total",
      "slowlane_jobs_finished_total",
      "slowlane_jobs_running",
      "slowlane_queue_pending",
      "slowlane_queue_in_flight",
      "slowlane_backend_call_duration_seconds",
      "slowlane_backend_attempts_total",
      "slowlane_redeliveries_total",
      "slowlane_result_cache_hits_total",
      "slowlane_result_cache_misses_total",
      "slowlane_config_reloads_total",
      "slowlane_nats_connected",
      "process_cpu_seconds_total",
      "nodejs_eventloop_lag_seconds",
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
  });

  it("counts a real async job and a passthrough request with their labels", async () => {
    const before = await scrape();
    const count = (samples: Sample[], name: string, labels: Record<string, string> = {}) => valueOf(samples, name, labels) ?? 0;

    const accepted = await request(slowlane.url).post("/slow?ms=50&tag=metrics").send("x");
    expect(accepted.status).toBe(202);
    const statusUrl = accepted.headers.location as string;
    await waitFor(async () => (await request(slowlane.url).get(statusUrl).redirects(0)).status === 303, {
      what: "the job to finish",
    });
    // Finished: this poll is answered from the cache of finished jobs.
    expect((await request(slowlane.url).get(statusUrl).redirects(0)).status).toBe(303);
    const passthrough = await request(slowlane.url).get("/plain?tag=metrics");
    expect(passthrough.status).toBe(200);

    const after = await waitFor(
      async () => {
        const samples = await scrape();
        return count(samples, "slowlane_jobs_finished_total", { route: "work", status: "completed" }) >
          count(before, "slowlane_jobs_finished_total", { route: "work", status: "completed" })
          ? samples
          : undefined;
      },
      { what: "the finished job in the metrics" },
    );
    const delta = (name: string, labels: Record<string, string> = {}) => count(after, name, labels) - count(before, name, labels);

    expect(delta("slowlane_http_requests_total", { route: "work", mode: "async", status: "202" })).toBe(1);
    expect(delta("slowlane_http_requests_total", { route: "", mode: "passthrough", status: "200" })).toBe(1);
    expect(delta("slowlane_http_requests_total", { route: "", mode: "jobs", status: "303" })).toBeGreaterThanOrEqual(2);
    expect(delta("slowlane_jobs_accepted_total", { route: "work" })).toBe(1);
    expect(delta("slowlane_accept_duration_seconds_count", { route: "work" })).toBe(1);
    expect(delta("slowlane_jobs_finished_total", { route: "work", status: "completed" })).toBe(1);
    expect(delta("slowlane_backend_attempts_total", { route: "work", outcome: "200" })).toBe(1);
    expect(delta("slowlane_backend_call_duration_seconds_count", { route: "work", status: "200" })).toBe(1);
    expect(delta("slowlane_result_cache_hits_total")).toBeGreaterThanOrEqual(1);
    expect(count(after, "slowlane_jobs_running", { route: "work" })).toBe(0);
    expect(valueOf(after, "slowlane_nats_connected")).toBe(1);
    expect(valueOf(after, "slowlane_config_reloads_total", { result: "failure" })).toBe(0);
    // The route's consumer, read from JetStream at scrape time: nothing left waiting or running.
    expect(valueOf(after, "slowlane_queue_pending", { route: "work" })).toBe(0);
    expect(valueOf(after, "slowlane_queue_in_flight", { route: "work" })).toBe(0);
    // No label carries an id or a path.
    for (const sample of after.filter((s) => s.name.startsWith("slowlane_"))) {
      for (const value of Object.values(sample.labels)) expect(value).not.toMatch(/[/?]|tag=/);
    }
  });
});

// Last: it stops the file's nats-server.
describe("readiness follows NATS", () => {
  it("goes 503 naming the failing checks when NATS goes away, and 200 again when it is back", async () => {
    await env.nats.stop();
    const down = await waitFor(
      async () => {
        const res = await request(admin).get("/readyz");
        return res.status === 503 ? res : undefined;
      },
      { what: "/readyz to answer 503" },
    );
    expect(down.body).toMatchObject({ status: "unavailable", failed: expect.arrayContaining(["nats"]) });
    expect(down.body.checks.config).toBe("ok");
    expect(down.body.checks.nats).toMatch(/not connected/);
    // Alive all along: nothing to restart.
    expect((await request(admin).get("/healthz")).status).toBe(200);
    expect(valueOf(await scrape(), "slowlane_nats_connected")).toBe(0);

    await env.nats.restart();
    await waitFor(async () => (await request(admin).get("/readyz")).status === 200, {
      timeoutMs: 30_000,
      what: "/readyz to answer 200 again",
    });
    expect(valueOf(await scrape(), "slowlane_nats_connected")).toBe(1);
  });
});
