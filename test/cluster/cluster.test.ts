/**
 * Scale-out on a 3-node nats-server cluster: R3 stream and buckets (`nats.replicas: 3`), two proxy
 * processes and three worker processes from the built CLI. Every job completes, either proxy
 * answers any status URL, and SIGKILLing a NATS node (the stream's leader) mid-run loses nothing:
 * every 202 ends completed. Needs `npm run build` first (npm test does it).
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestBackend } from "../helpers/backend.js";
import type { TestBackend } from "../helpers/backend.js";
import { JOBS, submitJob } from "../helpers/jobs.js";
import { startNatsCluster } from "../helpers/nats-cluster.js";
import type { NatsCluster } from "../helpers/nats-cluster.js";
import { spawnSlowlane, uniqueStream, waitForLog, writeConfigFile } from "../helpers/slowlane.js";
import type { ChildSlowlane } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const stream = uniqueStream("cluster");
let cluster: NatsCluster;
let backend: TestBackend;
let nc: NatsConnection;
const children: ChildSlowlane[] = [];
let proxies: string[] = [];

beforeAll(async () => {
  [cluster, backend] = await Promise.all([startNatsCluster({ size: 3 }), startTestBackend()]);
  const file = writeConfigFile({
    listen: "127.0.0.1:0",
    upstream: backend.url,
    nats: { servers: [...cluster.urls], stream, ackWait: "2s", replicas: 3 },
    admin: { listen: "127.0.0.1:0" },
    defaults: { timeout: "30s", ttl: "10m", attempts: 5, retryAfter: "1s" },
    routes: [{ name: "work", methods: ["POST"], path: "/slow", concurrency: 8 }],
  });
  const proxyProcs = [spawnSlowlane("proxy", file), spawnSlowlane("proxy", file)];
  const workers = [spawnSlowlane("worker", file), spawnSlowlane("worker", file), spawnSlowlane("worker", file)];
  children.push(...proxyProcs, ...workers);
  const listening = await Promise.all(proxyProcs.map((p) => waitForLog(p.logs, "proxy listening", 30_000)));
  proxies = listening.map((l) => String(l.url));
  await Promise.all(workers.map((w) => waitForLog(w.logs, "forwarder started", 30_000)));
  nc = await connect({ servers: [...cluster.urls], maxReconnectAttempts: -1, reconnectTimeWait: 250 });
});

afterAll(async () => {
  await Promise.all(children.map((c) => c.kill("SIGKILL")));
  await nc?.close();
  await Promise.all([backend?.close(), cluster?.close()]);
});

/** Submits until a 202: a 503 means nothing was accepted (NATS failing over), so the client may retry. */
async function submit(proxy: string, tag: string, ms: number): Promise<string> {
  return waitFor(() => submitJob(proxy, "post", `/slow?ms=${ms}&tag=${tag}`, { body: tag }), {
    timeoutMs: 30_000,
    what: `a 202 for ${tag}`,
  });
}

async function status(proxy: string, id: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${proxy}${JOBS}/${id}`, { redirect: "manual" });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The log lines every child wrote about a job: the message of a failed expectation. */
function jobLogs(id: string): string {
  return children.flatMap((c) => c.logs.filter((l) => l.job === id).map((l) => JSON.stringify(l))).join("\n");
}

/** Waits until `proxy` says the job is completed (503s while NATS fails over are retried). */
async function waitCompleted(proxy: string, id: string): Promise<Record<string, unknown>> {
  return waitFor(
    async () => {
      const s = await status(proxy, id);
      return s.status === 303 ? s.body : undefined;
    },
    { timeoutMs: 45_000, intervalMs: 50, what: `job ${id} completed via ${proxy}` },
  );
}

describe("a 3-node NATS cluster with R3 storage", () => {
  it("replicates the stream and the buckets on three nodes", async () => {
    const jsm = await jetstreamManager(nc);
    for (const name of [stream, `KV_${stream}_jobs`, `KV_${stream}_results`]) {
      const info = await jsm.streams.info(name);
      expect(info.config.num_replicas, name).toBe(3);
    }
  });

  it("completes every job, and either proxy answers any status URL", async () => {
    const ids = await Promise.all(Array.from({ length: 24 }, (_, i) => submit(proxies[i % 2] as string, `any${i}`, 20)));
    for (const [i, id] of ids.entries()) {
      const other = proxies[(i + 1) % 2] as string;
      const body = await waitCompleted(other, id);
      expect(body, jobLogs(id)).toMatchObject({ status: "completed" });
      const result = await fetch(`${other}${JOBS}/${id}/result`);
      expect(result.status).toBe(200);
      expect(((await result.json()) as { url: string }).url).toBe(`/slow?ms=20&tag=any${i}`);
    }
  });

  it("loses nothing when a NATS node is SIGKILLed mid-run", async () => {
    const jsm = await jetstreamManager(nc);
    // Kill the node that leads the work-queue stream: the harshest single failure.
    const leader = (await jsm.streams.info(stream)).cluster?.leader;
    const victim = cluster.nodes[Math.max(0, cluster.names.indexOf(leader ?? ""))];
    if (!victim) throw new Error("no node to kill");

    const accepted: string[] = [];
    const submitting = (async () => {
      for (let i = 0; i < 60; i++) {
        accepted.push(await submit(proxies[i % 2] as string, `kill${i}`, 100));
      }
    })();
    await waitFor(() => accepted.length >= 20, { timeoutMs: 30_000, what: "20 jobs accepted before the kill" });
    await victim.stop("SIGKILL");
    await submitting;

    expect(accepted).toHaveLength(60);
    for (const [i, id] of accepted.entries()) {
      const body = await waitCompleted(proxies[i % 2] as string, id);
      expect(body, jobLogs(id)).toMatchObject({ status: "completed" });
    }
    // Every accepted job reached the backend at least once (delivery is at least once).
    for (let i = 0; i < 60; i++) expect(backend.callsTo(`/slow?ms=100&tag=kill${i}`).length).toBeGreaterThanOrEqual(1);
  });
});
