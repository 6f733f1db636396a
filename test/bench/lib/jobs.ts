/**
 * Jobs from the harness's side: submitting many through a proxy (not measured), publishing
 * baseline messages, and watching a consumer drain.
 */
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, nanos } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { Pool } from "undici";
import { cpuTimeMs } from "./procs.js";

export const BODY_1K = JSON.stringify({ data: "y".repeat(1024 - 11) });

export async function connectHarness(servers: readonly string[]): Promise<{ nc: NatsConnection; jsm: JetStreamManager }> {
  const nc = await connect({ servers: [...servers], maxReconnectAttempts: -1 });
  return { nc, jsm: await jetstreamManager(nc) };
}

/**
 * POSTs `count` requests to `url` (64 at a time) and returns the job ids from the 202s.
 * A 503 (NATS busy failing over) is retried; anything else is an error.
 */
export async function submitJobs(url: string, path: string, count: number, body = BODY_1K): Promise<string[]> {
  const pool = new Pool(url, { connections: 64, pipelining: 1 });
  const ids: string[] = [];
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < count) {
      next++;
      for (;;) {
        const res = await pool.request({ method: "POST", path, body, headers: { "content-type": "application/json" } });
        const text = await res.body.text();
        if (res.statusCode === 202) {
          ids.push((JSON.parse(text) as { id: string }).id);
          break;
        }
        if (res.statusCode !== 503) throw new Error(`accept answered ${res.statusCode}: ${text}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  await Promise.all(Array.from({ length: 64 }, one));
  await pool.close();
  return ids;
}

/** A baseline work-queue stream on file storage (subjects `<name>.>`), like slowlane's. */
export async function createBaselineStream(jsm: JetStreamManager, name: string, replicas = 1): Promise<void> {
  await jsm.streams.add({
    name,
    subjects: [`${name}.>`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: nanos(120_000),
    num_replicas: replicas,
  });
}

export async function createBaselineConsumer(jsm: JetStreamManager, stream: string, name: string, maxAckPending: number): Promise<void> {
  await jsm.consumers.add(stream, {
    durable_name: name,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    max_ack_pending: maxAckPending,
    ack_wait: nanos(30_000),
  });
}

export async function createBaselineBucket(nc: NatsConnection, name: string): Promise<void> {
  await new Kvm(jetstream(nc)).create(name, { history: 1, storage: StorageType.File });
}

/** Publishes `count` 1 KiB messages to `<stream>.jobs.<n>`, 256 in flight. */
export async function publishJobs(nc: NatsConnection, stream: string, count: number): Promise<void> {
  const js = jetstream(nc);
  const body = new TextEncoder().encode(BODY_1K);
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < count) {
      const n = next++;
      await js.publish(`${stream}.jobs.b${n}`, body, { msgID: `b${n}-${Date.now()}` });
    }
  };
  await Promise.all(Array.from({ length: 256 }, one));
}

/** Jobs not yet done on a consumer: waiting plus delivered and not acked. */
export async function remaining(jsm: JetStreamManager, stream: string, consumer: string): Promise<number> {
  const info = await jsm.consumers.info(stream, consumer);
  return info.num_pending + info.num_ack_pending;
}

export interface DrainResult {
  /** Jobs per second between 10% and 90% done: start-up and the tail left out. */
  jobsPerSec: number;
  /** Start of sampling to none left, in ms. */
  totalMs: number;
  /**
   * CPU time (user + system) per job of each process in `cpuOf`, over the same 10%-90% window, in
   * ms. Steadier than the rate on a shared machine: it barely moves when other work competes for
   * the cores.
   */
  cpuMsPerJob: Record<string, number>;
}

interface Mark {
  t: number;
  left: number;
  cpu: Record<string, number>;
}

/**
 * Samples a consumer every 50 ms until nothing is left (it must exist: call after the worker is
 * up), calling `onSample` with the fraction done; the rate is taken between 10% and 90% done, and
 * so is the CPU time of each process in `cpuOf` (name → pids, summed: e.g. four workers).
 */
export async function watchDrain(
  jsm: JetStreamManager,
  stream: string,
  consumer: string,
  total: number,
  options: { cpuOf?: Record<string, readonly number[]>; onSample?: (doneFraction: number) => void; timeoutMs?: number } = {},
): Promise<DrainResult> {
  const { cpuOf = {}, onSample = () => undefined, timeoutMs = 30 * 60_000 } = options;
  const cpuNow = (): Record<string, number> =>
    Object.fromEntries(Object.entries(cpuOf).map(([name, pids]) => [name, pids.reduce((sum, pid) => sum + cpuTimeMs(pid), 0)]));
  const start = performance.now();
  const first: Mark = { t: start, left: total, cpu: cpuNow() };
  let t10: Mark | undefined;
  let t90: Mark | undefined;
  for (;;) {
    const left = await remaining(jsm, stream, consumer);
    const t = performance.now();
    const done = 1 - left / total;
    onSample(done);
    if (!t10 && done >= 0.1) t10 = { t, left, cpu: cpuNow() };
    if (!t90 && done >= 0.9) t90 = { t, left, cpu: cpuNow() };
    if (left === 0) {
      const a = t10 ?? first;
      const b = t90 ?? { t, left, cpu: cpuNow() };
      const jobs = a.left - b.left;
      const rate = b.t > a.t && jobs > 0 ? (jobs * 1000) / (b.t - a.t) : (total * 1000) / (t - start);
      const cpuMsPerJob = Object.fromEntries(Object.keys(cpuOf).map((name) => [name, ((b.cpu[name] ?? NaN) - (a.cpu[name] ?? NaN)) / jobs]));
      return { jobsPerSec: rate, totalMs: t - start, cpuMsPerJob };
    }
    if (t - start > timeoutMs) throw new Error(`${stream}/${consumer}: ${left} jobs still left after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
