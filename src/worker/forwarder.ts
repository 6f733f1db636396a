/**
 * The forwarder: pulls accepted requests from each route's consumer and replays them to the
 * backend, writing the job record at each transition.
 *
 * Invariants:
 * - The record is written before the message is acked, so a job is never gone from both the
 *   stream and the jobs bucket (the proxy's lookup relies on it).
 * - While a call runs, the message is heartbeated (`working()`) every third of AckWait, so a
 *   long call is not redelivered; if this process dies, heartbeats stop and another worker gets
 *   the message after AckWait.
 * - The consumer's MaxAckPending is the route's concurrency: the server, not this process,
 *   bounds the calls in flight across all workers.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { JsMsg } from "@nats-io/jetstream";
import type { ConsumerMessages } from "@nats-io/jetstream";
import type { Agent } from "undici";
import type { Config, RouteConfig } from "../config/index.js";
import { UpstreamTimeoutError, UpstreamUnreachableError } from "../errors.js";
import type { SlowlaneError } from "../errors.js";
import type { Logger } from "../log.js";
import { decodeEnvelope } from "../queue/envelope.js";
import type { JobRequest } from "../queue/envelope.js";
import type { JetStreamContext } from "../queue/provision.js";
import { JobStatus, isFinal } from "../store/job-record.js";
import type { JobRecord } from "../store/job-record.js";
import type { JobStore } from "../store/job-store.js";
import { callBackend, createBackendAgent } from "./backend-call.js";
import { backoffDelayMs } from "./retry-policy.js";

export interface ForwarderOptions {
  config: Config;
  context: JetStreamContext;
  store: JobStore;
  log: Logger;
  /** The undici Agent for backend calls; one is created (and closed) when not given. */
  agent?: Agent;
}

export interface Forwarder {
  /** Calls running now, in this process. */
  readonly inFlight: number;
  /**
   * Stops pulling, lets running calls finish for up to `drainMs`, then aborts the rest and naks
   * them so another worker takes them at once.
   */
  close(drainMs?: number): Promise<void>;
  /**
   * Starts pulling again from these routes' consumers. For consumers that were re-created (a
   * NATS server that came back without its state): nats.js would otherwise find them only at
   * its next retry, up to 30 s later.
   */
  resubscribe(routes: readonly string[]): Promise<void>;
}

interface RunningCall {
  readonly done: Promise<void>;
  readonly abort: AbortController;
}

/** A backend failure that counts against the route's attempts (anything else is our own trouble). */
function isBackendFailure(err: unknown): err is UpstreamTimeoutError | UpstreamUnreachableError {
  return err instanceof UpstreamTimeoutError || err instanceof UpstreamUnreachableError;
}

export async function createForwarder(options: ForwarderOptions): Promise<Forwarder> {
  const { config, context, store, log } = options;
  const agent = options.agent ?? createBackendAgent();
  const ownsAgent = options.agent === undefined;
  const heartbeatMs = Math.max(50, Math.floor(config.nats.ackWaitMs / 3));
  const running = new Set<RunningCall>();
  const subscriptions = new Map<string, { messages: ConsumerMessages; loop: Promise<void> }>();

  async function finish(msg: JsMsg, record: JobRecord): Promise<void> {
    await store.putRecord(record);
    if (record.status === JobStatus.Failed) msg.term(record.error?.message);
    else await msg.ackAck();
  }

  async function runJob(route: RouteConfig, msg: JsMsg, abort: AbortController): Promise<void> {
    const job = decodeEnvelope(msg.headers);
    if (!job || job.route !== route.name) {
      log.error({ subject: msg.subject, seq: msg.seq }, "dropping a message that is not a slowlane request");
      msg.term("not a slowlane request");
      return;
    }
    const previous = await store.getRecord(job.id);
    if (previous && isFinal(previous)) {
      // Finished, but the ack was lost (crash between the record write and the ack).
      await msg.ackAck();
      return;
    }
    const attempt = (previous?.attempts ?? 0) + 1;
    const failures = previous?.failures ?? 0;
    const startedAt = Date.now();
    const base = { id: job.id, route: route.name, createdAt: job.createdAt, attempts: attempt, failures };
    await store.putRecord({ ...base, status: JobStatus.Running, updatedAt: startedAt });
    log.info({ job: job.id, route: route.name, attempt, redelivered: msg.redelivered }, "job started");

    const heartbeat = setInterval(() => msg.working(), heartbeatMs);
    try {
      const res = await callBackend({
        agent,
        upstream: config.upstream,
        request: job,
        body: msg.data,
        timeoutMs: route.timeoutMs,
        signal: abort.signal,
      });
      const location = await store.putBody(job.id, res.body);
      const finishedAt = Date.now();
      await finish(msg, {
        ...base,
        status: JobStatus.Completed,
        updatedAt: finishedAt,
        expiresAt: finishedAt + route.ttlMs,
        response: { status: res.status, headers: res.headers, bodyBytes: res.body.byteLength, body: location },
      });
      log.info(
        { job: job.id, route: route.name, attempt, durationMs: finishedAt - startedAt, responseStatus: res.status },
        "job completed",
      );
    } catch (err) {
      if (!isBackendFailure(err)) throw err;
      await recordFailure(route, msg, job, { ...base, failures: failures + 1 }, err, startedAt);
    } finally {
      clearInterval(heartbeat);
    }
  }

  async function recordFailure(
    route: RouteConfig,
    msg: JsMsg,
    job: JobRequest,
    base: Pick<JobRecord, "id" | "route" | "createdAt" | "attempts"> & { failures: number },
    err: SlowlaneError,
    startedAt: number,
  ): Promise<void> {
    const now = Date.now();
    const error = { code: err.code, message: err.message };
    const fields = { job: job.id, route: route.name, attempt: base.attempts, durationMs: now - startedAt, error };
    if (base.failures < route.attempts) {
      const delayMs = backoffDelayMs(base.failures + 1);
      await store.putRecord({ ...base, status: JobStatus.Queued, updatedAt: now, error });
      msg.nak(delayMs);
      log.warn({ ...fields, retryInMs: delayMs }, "attempt failed");
      return;
    }
    await finish(msg, { ...base, status: JobStatus.Failed, updatedAt: now, expiresAt: now + route.ttlMs, error });
    log.warn(fields, "job failed");
  }

  function start(route: RouteConfig, msg: JsMsg): void {
    const abort = new AbortController();
    const call: RunningCall = {
      abort,
      done: runJob(route, msg, abort)
        .catch((err: unknown) => {
          // Not the backend's fault (NATS write failed, shutdown): let another attempt run it soon.
          if (!abort.signal.aborted) log.error({ err, subject: msg.subject }, "job interrupted; it will be redelivered");
          msg.nak(abort.signal.aborted ? 0 : 1_000);
        })
        .finally(() => running.delete(call)),
    };
    running.add(call);
  }

  async function subscribe(route: RouteConfig): Promise<void> {
    const consumer = await context.js.consumers.get(context.names.stream, context.names.consumer(route.name));
    const messages = await consumer.consume({ max_messages: route.concurrency });
    const loop = (async () => {
      for await (const msg of messages) start(route, msg);
    })().catch((err: unknown) => log.error({ err, route: route.name }, "consumer loop stopped"));
    subscriptions.set(route.name, { messages, loop });
  }

  async function unsubscribe(route: string): Promise<void> {
    const subscription = subscriptions.get(route);
    if (!subscription) return;
    subscriptions.delete(route);
    subscription.messages.stop();
    await subscription.loop;
  }

  for (const route of config.routes) await subscribe(route);
  log.info({ routes: config.routes.map((r) => r.name) }, "forwarder started");

  return {
    get inFlight() {
      return running.size;
    },
    async resubscribe(routes) {
      for (const route of config.routes.filter((r) => routes.includes(r.name))) {
        await unsubscribe(route.name);
        await subscribe(route);
        log.info({ route: route.name }, "consumer re-created; pulling again");
      }
    },
    async close(drainMs = 25_000) {
      await Promise.all([...subscriptions.keys()].map(unsubscribe));
      const all = Promise.all([...running].map((c) => c.done));
      // An unref'd timer: once the calls are done, nothing is left holding the process open.
      const drained = await Promise.race([all.then(() => true), sleep(drainMs, false, { ref: false })]);
      if (!drained) {
        log.warn({ inFlight: running.size }, "drain timeout: aborting running calls; they go back to the queue");
        for (const call of running) call.abort.abort();
        await all;
      }
      if (ownsAgent) await agent.close();
    },
  };
}
