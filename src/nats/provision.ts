/**
 * Idempotent set-up of everything slowlane keeps in JetStream: the work-queue stream, one durable
 * pull consumer per route, and the job and result stores. Run on every (re)connect by proxies and
 * workers alike; settings that changed in the config are applied to what exists.
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import type { ConsumerConfig, JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { nanos } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Config, RouteConfig } from "../config/index.js";
import { toJetStreamNames } from "./names.js";
import type { JetStreamNames } from "./names.js";
import { maxPayloadOf } from "./context.js";
import type { JetStreamContext } from "./context.js";

/** Duplicate window for `Nats-Msg-Id`: a retried publish of the same job within it is stored once. */
const DUPLICATE_WINDOW_MS = 2 * 60_000;

function allRouteSettings(config: Config): Pick<RouteConfig, "ttlMs" | "timeoutMs" | "deadlineMs" | "attempts" | "backoff">[] {
  return [config.defaults, ...config.routes];
}

/**
 * How long a job of a route without a `deadline` is counted on to wait in the queue before its
 * first call, for the lifetime of its claim-checked request body (see {@link bodiesMaxAgeMs}).
 */
export const QUEUE_WAIT_ALLOWANCE_MS = 24 * 3_600_000;

/**
 * How long an open circuit's key lives in the circuits bucket without being written again: a
 * worker that died stops showing its paused routes after this. Workers rewrite theirs every third of it.
 */
export const CIRCUIT_STATE_MAX_AGE_MS = 30_000;

/**
 * A job record must outlive the route's `ttl` once finished, and a running call's timeout while
 * it runs (each attempt rewrites the record, which restarts its age; a worker touches a running
 * record that gets old, see `touchRunning`).
 */
export function jobsMaxAgeMs(config: Config): number {
  return Math.max(...allRouteSettings(config).map((r) => r.ttlMs + r.timeoutMs));
}

export function resultsMaxAgeMs(config: Config): number {
  return Math.max(...allRouteSettings(config).map((r) => r.ttlMs));
}

/**
 * The Object Store keeps response bodies (which need `ttl`) and claim-checked request bodies, which
 * must outlive everything their job may wait through: the queue before its first call (its route's
 * `deadline`, or {@link QUEUE_WAIT_ALLOWANCE_MS} without one: the work-queue stream itself never
 * drops a job), every attempt with its longest backoff, and then the `ttl` of a failed job, whose
 * dead letter `slowlane jobs retry` can requeue. A job whose body is gone anyway fails with
 * `SLOWLANE_REQUEST_BODY_MISSING`.
 */
export function bodiesMaxAgeMs(config: Config): number {
  const requestBodies = allRouteSettings(config).map(
    (r) => (r.deadlineMs ?? QUEUE_WAIT_ALLOWANCE_MS) + r.attempts * (r.timeoutMs + r.backoff.maxMs) + r.ttlMs,
  );
  return Math.max(jobsMaxAgeMs(config), ...requestBodies);
}

export function toConsumerConfig(config: Config, route: RouteConfig): Partial<ConsumerConfig> {
  const names = toJetStreamNames(config.nats.stream);
  return {
    durable_name: names.consumer(route.name),
    filter_subject: names.routeFilter(route.name),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    // The route's concurrency, enforced by the server across every worker process.
    max_ack_pending: route.concurrency,
    ack_wait: nanos(config.nats.ackWaitMs),
    // Attempts are counted in the job record, which knows timeouts from crashes; the server never gives up.
    max_deliver: -1,
  };
}

type WantedStream = Partial<StreamConfig> & { name: string; retention: RetentionPolicy };

/** Creates a stream, or updates the settings slowlane owns when they differ from what exists. */
async function ensureStream(jsm: JetStreamManager, wanted: WantedStream): Promise<void> {
  const info = await jsm.streams.info(wanted.name).catch(() => null);
  if (!info) {
    await jsm.streams.add(wanted);
    return;
  }
  if (info.config.retention !== wanted.retention) {
    throw new Error(`stream ${wanted.name} exists with another retention policy; choose another nats.stream prefix`);
  }
  const current = info.config as unknown as Record<string, unknown>;
  const changed = Object.entries(wanted).some(([key, value]) =>
    Array.isArray(value) ? (current[key] as unknown[] | undefined)?.join() !== value.join() : current[key] !== value,
  );
  if (changed) await jsm.streams.update(wanted.name, { ...info.config, ...wanted });
}

function workQueueStream(names: JetStreamNames, replicas: number): WantedStream {
  return {
    name: names.stream,
    subjects: [names.jobsFilter],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    num_replicas: replicas,
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    allow_direct: true,
  };
}

/** Requests of failed jobs, one per job, kept as long as a finished job so ops can retry them. */
function deadLetterStream(names: JetStreamNames, replicas: number, maxAgeMs: number): WantedStream {
  return {
    name: names.deadStream,
    subjects: [names.deadFilter],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    num_replicas: replicas,
    max_age: nanos(maxAgeMs),
    // JetStream refuses a duplicate window longer than max_age (a ttl under two minutes).
    duplicate_window: nanos(Math.min(DUPLICATE_WINDOW_MS, maxAgeMs)),
    max_msgs_per_subject: 1,
    discard: DiscardPolicy.Old,
    allow_direct: true,
  };
}

/** Creates or updates a route's consumer; true when it had to be created. */
async function ensureConsumer(jsm: JetStreamManager, stream: string, wanted: Partial<ConsumerConfig>): Promise<boolean> {
  const durable = wanted.durable_name as string;
  const info = await jsm.consumers.info(stream, durable).catch(() => null);
  if (!info) {
    await jsm.consumers.add(stream, wanted);
    return true;
  }
  if (info.config.max_ack_pending !== wanted.max_ack_pending || info.config.ack_wait !== wanted.ack_wait) {
    await jsm.consumers.update(stream, durable, {
      max_ack_pending: wanted.max_ack_pending,
      ack_wait: wanted.ack_wait,
    });
  }
  return false;
}

/**
 * Makes a bucket's `max_age` and replicas what the config says; stores opened by name do not update
 * them. The duplicate window follows a shorter max_age down (JetStream refuses one longer than it).
 */
async function ensureBucket(jsm: JetStreamManager, stream: string, maxAgeMs: number, replicas: number): Promise<void> {
  const info = await jsm.streams.info(stream);
  const duplicateWindow = Math.min(info.config.duplicate_window, nanos(maxAgeMs));
  if (info.config.max_age !== nanos(maxAgeMs) || info.config.num_replicas !== replicas || info.config.duplicate_window !== duplicateWindow) {
    await jsm.streams.update(stream, { ...info.config, max_age: nanos(maxAgeMs), num_replicas: replicas, duplicate_window: duplicateWindow });
  }
}

export interface ProvisionOptions {
  /** Create and update the route consumers (workers and `run`; a bare proxy does not need them). */
  consumers: boolean;
}

export async function provision(nc: NatsConnection, config: Config, options: ProvisionOptions): Promise<JetStreamContext> {
  const names = toJetStreamNames(config.nats.stream);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);

  const replicas = config.nats.replicas;
  const jobsAge = jobsMaxAgeMs(config);
  const resultsAge = resultsMaxAgeMs(config);
  const bodiesAge = bodiesMaxAgeMs(config);
  await ensureStream(jsm, workQueueStream(names, replicas));
  await ensureStream(jsm, deadLetterStream(names, replicas, resultsAge));
  const createdConsumers: string[] = [];
  if (options.consumers) {
    for (const route of config.routes) {
      if (await ensureConsumer(jsm, names.stream, toConsumerConfig(config, route))) createdConsumers.push(route.name);
    }
  }

  const kvm = new Kvm(js);
  const kv = { history: 1, storage: StorageType.File, replicas };
  const jobs = await kvm.create(names.jobsBucket, { ...kv, ttl: jobsAge });
  const results = await kvm.create(names.resultsBucket, { ...kv, ttl: resultsAge });
  const bodies = await new Objm(js).create(names.bodiesStore, {
    storage: StorageType.File,
    replicas,
    ttl: nanos(bodiesAge),
  });
  // Open circuits are short-lived state, rewritten while they last: memory is enough.
  await kvm.create(names.circuitsBucket, { history: 1, storage: StorageType.Memory, replicas, ttl: CIRCUIT_STATE_MAX_AGE_MS });
  await ensureBucket(jsm, names.jobsBucketStream, jobsAge, replicas);
  await ensureBucket(jsm, names.resultsBucketStream, resultsAge, replicas);
  await ensureBucket(jsm, names.bodiesStoreStream, bodiesAge, replicas);
  await ensureBucket(jsm, names.circuitsBucketStream, CIRCUIT_STATE_MAX_AGE_MS, replicas);

  const maxPayloadBytes = maxPayloadOf(nc);
  const consumerRoutes: string[] = [];
  for await (const consumer of jsm.consumers.list(names.stream)) {
    const route = names.routeOfConsumer(consumer.name);
    if (route !== undefined) consumerRoutes.push(route);
  }
  return { nc, js, jsm, names, jobs, results, bodies, maxPayloadBytes, createdConsumers, consumerRoutes };
}
