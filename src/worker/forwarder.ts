/**
 * The forwarder: pulls accepted requests from each route's consumer and replays them to the
 * backend, writing the job record at each transition.
 *
 * Invariants:
 * - The record is written before the message is acked or terminated, so a job is never gone
 *   from both the stream and the jobs bucket (the proxy's lookup relies on it).
 * - Record writes are compare-and-set on the revision this worker last wrote: a job canceled
 *   meanwhile (`DELETE` on its status URL) is never overwritten with a result.
 * - While a call runs, the message is heartbeated (`working()`) every third of AckWait, so a
 *   long call is not redelivered; if this process dies, heartbeats stop and another worker gets
 *   the message after AckWait.
 * - The consumer's MaxAckPending is the route's concurrency: the server, not this process,
 *   bounds the calls in flight across all workers.
 * - A job ends in a final state: completed, failed (attempts exhausted, response too large, or
 *   interrupted too often: a poison job), or canceled. A failed job's request goes to the
 *   dead-letter stream first, then its message is terminated: never redelivered forever.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import type { Subscription } from "@nats-io/transport-node";
import type { Agent } from "undici";
import type { Config, RouteConfig } from "../config/index.js";
import {
  JobInterruptedError,
  ResponseTooLargeError,
  UpstreamStatusError,
  UpstreamTimeoutError,
  UpstreamUnreachableError,
} from "../errors.js";
import type { SlowlaneError } from "../errors.js";
import type { Logger } from "../log.js";
import { putDeadLetter } from "../jobs/dead-letters.js";
import { decodeEnvelope } from "../jobs/envelope.js";
import type { JobRequest } from "../jobs/envelope.js";
import type { JetStreamContext } from "../nats/provision.js";
import { JobStatus, isFinal, withAttempt } from "../jobs/record.js";
import type { JobRecord } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { callBackend, createBackendAgent } from "./backend-call.js";
import { storeResponseBody } from "./response-body.js";
import { parseRetryAfterMs, retryDelayMs } from "./retry-policy.js";

/**
 * Starts of one job that ended without an outcome (the worker crashed, was killed, or lost NATS
 * mid-call: the next start finds the record still `running`) before the job is failed as poison
 * instead of tried again.
 */
export const MAX_INTERRUPTIONS = 5;

/** How long one pull request waits on the server (see `subscribe`). */
const PULL_EXPIRES_MS = 5_000;

/** What a forwarder reports as it works, for metrics. Every method is optional and must not throw. */
export interface ForwarderObserver {
  /** A job was taken from the queue and its backend call is starting. */
  jobStarted?(route: string, attempt: number, redelivered: boolean): void;
  /** A backend call ended: `outcome` is the HTTP status, or `timeout`, `unreachable`, `aborted`, `too_large`, `error`. */
  callFinished?(route: string, outcome: string, durationMs: number): void;
  /** A job reached a final state. */
  jobFinished?(route: string, status: JobStatus): void;
}

export interface ForwarderOptions {
  config: Config;
  context: JetStreamContext;
  store: JobStore;
  log: Logger;
  /** The undici Agent for backend calls; one is created (and closed) when not given. */
  agent?: Agent;
  observer?: ForwarderObserver;
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
  /**
   * Applies a reloaded config: pulls from new routes, re-subscribes routes whose concurrency
   * changed, and uses each route's new settings for the jobs it starts from now on. A removed
   * route's consumer is still drained: jobs accepted under it are worked with its last settings.
   * Call after `provision` has created the new routes' consumers.
   */
  reconfigure(config: Config): Promise<void>;
}

/** Why a running call was aborted. */
const AbortReason = { Shutdown: "shutdown", Canceled: "canceled" } as const;
type AbortReason = (typeof AbortReason)[keyof typeof AbortReason];

interface RunningCall {
  /** The job's id; `undefined` for a message that is not a slowlane request. */
  readonly jobId: string | undefined;
  readonly done: Promise<void>;
  readonly abort: AbortController;
}

/** A failure that counts against the route's attempts. */
function isRetryable(err: unknown): err is UpstreamTimeoutError | UpstreamUnreachableError | UpstreamStatusError {
  return err instanceof UpstreamTimeoutError || err instanceof UpstreamUnreachableError || err instanceof UpstreamStatusError;
}

/** How a call ended, as the record's history and the metrics name it. */
function outcomeOf(err: unknown): string {
  if (err instanceof UpstreamStatusError) return String(err.upstreamStatus);
  if (err instanceof UpstreamTimeoutError) return "timeout";
  if (err instanceof UpstreamUnreachableError) return "unreachable";
  if (err instanceof ResponseTooLargeError) return "too_large";
  return "aborted";
}

/**
 * Takes a message out of the work queue for good. Always without a reason: nats-server 2.9 takes
 * only a bare `+TERM`, and silently ignores `+TERM <reason>` (the message would be redelivered).
 */
function terminate(msg: JsMsg): void {
  msg.term();
}

function toFailure(err: SlowlaneError): NonNullable<JobRecord["error"]> {
  return err instanceof UpstreamStatusError
    ? { code: err.code, message: err.message, upstreamStatus: err.upstreamStatus }
    : { code: err.code, message: err.message };
}

export async function createForwarder(options: ForwarderOptions): Promise<Forwarder> {
  const { context, store, log, observer } = options;
  let config = options.config;
  const agent = options.agent ?? createBackendAgent();
  const ownsAgent = options.agent === undefined;
  const running = new Set<RunningCall>();
  /** Settings of every route pulled from, removed ones included (their queues are still drained). */
  const routes = new Map<string, RouteConfig>(config.routes.map((r) => [r.name, r]));
  const subscriptions = new Map<string, { messages: ConsumerMessages; loop: Promise<void>; concurrency: number }>();

  /** Settings for a route the config no longer has (its queue is still drained): the defaults. */
  function removedRoute(name: string): RouteConfig {
    return { ...config.defaults, name, methods: undefined, path: "" };
  }

  /** Deletes a claim-checked request body once the job no longer needs it. */
  async function deleteStoredRequest(job: JobRequest): Promise<void> {
    if (job.storedBody) await store.deleteRequestBody(job.storedBody.name);
  }

  /** One job's run: the message, the record as last written by this worker, and its revision. */
  interface Run {
    readonly msg: JsMsg;
    readonly job: JobRequest;
    readonly route: RouteConfig;
    record: JobRecord;
    revision: number;
  }

  /** Writes the next record if nobody else (a cancel) wrote one since; false when the job was canceled. */
  async function transition(run: Run, record: JobRecord): Promise<boolean> {
    const revision = await store.updateRecord(record, run.revision);
    if (revision === undefined) return false;
    run.record = record;
    run.revision = revision;
    return true;
  }

  /**
   * Someone else wrote the record since this worker did. Usually a cancel: drop the message and
   * what was stored. Or a redelivery of the same message to another worker (this one's heartbeats
   * did not get through): that run owns the job now, so leave everything to it.
   */
  async function lostRecord(run: Run): Promise<void> {
    const current = await store.getRecord(run.job.id);
    if (current?.status !== JobStatus.Canceled) {
      log.warn({ job: run.job.id, route: run.route.name, status: current?.status }, "another worker took the job over; leaving it to it");
      return;
    }
    terminate(run.msg);
    await Promise.all([store.deleteResponse(run.job.id), deleteStoredRequest(run.job)]);
    log.info({ job: run.job.id, route: run.route.name }, "job canceled; its result is not kept");
    observer?.jobFinished?.(run.route.name, JobStatus.Canceled);
  }

  async function fail(run: Run, err: SlowlaneError, extra: Partial<JobRecord> = {}): Promise<void> {
    const now = Date.now();
    // The dead letter first: a failed record always has a request that `slowlane jobs retry` can requeue.
    await putDeadLetter(context, run.job, run.msg);
    const failed: JobRecord = {
      ...run.record,
      ...extra,
      status: JobStatus.Failed,
      updatedAt: now,
      expiresAt: now + run.route.ttlMs,
      error: toFailure(err),
    };
    if (!(await transition(run, failed))) {
      await lostRecord(run);
      return;
    }
    terminate(run.msg);
    log.warn({ job: run.job.id, route: run.route.name, attempts: failed.attempts, error: failed.error }, "job failed");
    observer?.jobFinished?.(run.route.name, JobStatus.Failed);
  }

  /**
   * Writes the job's record `running` and returns the run; or deals with the message and returns
   * `undefined` (canceled, already finished, poison). A first delivery creates the record outright,
   * one write; only when one exists already (canceled before it started, requeued by
   * `slowlane jobs retry`) or on a redelivery is it read first.
   */
  async function startRun(job: JobRequest, route: RouteConfig, msg: JsMsg): Promise<Run | undefined> {
    const startedAt = Date.now();
    const base = { id: job.id, route: route.name, createdAt: job.createdAt, updatedAt: startedAt };
    if (msg.info.deliveryCount === 1) {
      const record: JobRecord = { ...base, status: JobStatus.Running, attempts: 1, failures: 0, interruptions: 0 };
      const revision = await store.updateRecord(record, 0);
      if (revision !== undefined) return { msg, job, route, record, revision };
    }
    const previous = await store.readRecord(job.id);
    if (previous && isFinal(previous.record)) {
      // Canceled before it started, or finished but the ack was lost (crash between the record write and the ack).
      if (previous.record.status === JobStatus.Canceled) {
        terminate(msg);
        await deleteStoredRequest(job);
      } else await msg.ackAck();
      return undefined;
    }
    const before = previous?.record;
    const run: Run = {
      msg,
      job,
      route,
      revision: previous?.revision ?? 0,
      record: {
        ...base,
        attempts: before?.attempts ?? 0,
        failures: before?.failures ?? 0,
        ...(before?.history ? { history: before.history } : {}),
        ...(before?.retries ? { retries: before.retries } : {}),
        // A record still `running` is a start that never ended: its worker died mid-call.
        interruptions: (before?.interruptions ?? 0) + (before?.status === JobStatus.Running ? 1 : 0),
        status: JobStatus.Queued,
      },
    };
    if ((run.record.interruptions ?? 0) >= MAX_INTERRUPTIONS) {
      await fail(run, new JobInterruptedError(run.record.interruptions ?? 0));
      return undefined;
    }
    const started: JobRecord = { ...run.record, status: JobStatus.Running, attempts: run.record.attempts + 1 };
    if (!(await transition(run, started))) {
      await lostRecord(run);
      return undefined;
    }
    return run;
  }

  async function runJob(job: JobRequest, msg: JsMsg, abort: AbortController): Promise<void> {
    const route = routes.get(job.route) ?? removedRoute(job.route);
    const run = await startRun(job, route, msg);
    if (!run) return;
    const attempt = run.record.attempts;
    const failures = run.record.failures ?? 0;
    const startedAt = run.record.updatedAt;
    log.info({ job: job.id, route: route.name, attempt, redelivered: msg.redelivered }, "job started");
    observer?.jobStarted?.(route.name, attempt, msg.redelivered);

    const heartbeat = setInterval(() => msg.working(), Math.max(50, Math.floor(config.nats.ackWaitMs / 3)));
    // Reported once per started call, however it ends (`error`: our own trouble, e.g. a store write failed).
    let outcome = "error";
    try {
      const body = job.storedBody === undefined ? msg.data : await store.getRequestBody(job.storedBody.name);
      if (body === undefined) throw new Error(`the stored request body of job ${job.id} is gone`);
      const res = await callBackend({ agent, upstream: config.upstream, request: job, body, timeoutMs: route.timeoutMs, signal: abort.signal });
      if (route.retryOn.includes(res.status)) {
        res.discard();
        throw new UpstreamStatusError(res.status, parseRetryAfterMs(res.status, res.header("retry-after")));
      }
      const stored = await storeResponseBody(store, job.id, res, route.maxResponseBytes);
      const finishedAt = Date.now();
      outcome = String(res.status);
      const completed: JobRecord = {
        ...run.record,
        status: JobStatus.Completed,
        updatedAt: finishedAt,
        expiresAt: finishedAt + route.ttlMs,
        history: withAttempt(run.record.history, { attempt, startedAt, durationMs: finishedAt - startedAt, outcome: String(res.status) }),
        response: {
          status: res.status,
          headers: res.headers,
          bodyBytes: stored.bytes,
          body: stored.location,
          ...(stored.inline === undefined ? {} : { inline: stored.inline }),
        },
      };
      if (!(await transition(run, completed))) {
        await lostRecord(run);
        return;
      }
      await msg.ackAck();
      await deleteStoredRequest(job);
      log.info(
        { job: job.id, route: route.name, attempt, durationMs: finishedAt - startedAt, responseStatus: res.status, bodyBytes: stored.bytes },
        "job completed",
      );
      observer?.jobFinished?.(route.name, JobStatus.Completed);
    } catch (err) {
      const durationMs = Date.now() - startedAt;
      if (abort.signal.aborted) {
        outcome = "aborted";
        if (abort.signal.reason === AbortReason.Canceled) {
          await lostRecord(run);
          return;
        }
        // Shutdown: not the job's fault, so it does not count as a start. The caller naks it for another worker.
        await handBack(run, "aborted", durationMs);
        throw err;
      }
      if (!isRetryable(err) && !(err instanceof ResponseTooLargeError)) {
        // Our own trouble (a NATS write timed out, say): not the job's fault either. If NATS takes the
        // write, the next start does not count this one as an interruption.
        await handBack(run, "error", durationMs).catch(() => undefined);
        throw err;
      }
      outcome = outcomeOf(err);
      const history = withAttempt(run.record.history, { attempt, startedAt, durationMs, outcome });
      if (err instanceof ResponseTooLargeError) {
        await fail(run, err, { history });
        return;
      }
      await retryOrFail(run, err, { history, failures: failures + 1 }, durationMs);
    } finally {
      clearInterval(heartbeat);
      observer?.callFinished?.(route.name, outcome, Date.now() - startedAt);
    }
  }

  /**
   * Writes the record back to `queued` without counting the start: the call was cut short by us,
   * not by the job. Only while the record says `running`: once it is final (the failure came
   * after, say acking), the job is done and must stay so.
   */
  async function handBack(run: Run, outcome: string, durationMs: number): Promise<void> {
    if (run.record.status !== JobStatus.Running) return;
    const { attempts, updatedAt: startedAt } = run.record;
    const history = withAttempt(run.record.history, { attempt: attempts, startedAt, durationMs, outcome });
    await transition(run, { ...run.record, status: JobStatus.Queued, attempts: attempts - 1, updatedAt: Date.now(), history });
  }

  async function retryOrFail(
    run: Run,
    err: UpstreamTimeoutError | UpstreamUnreachableError | UpstreamStatusError,
    extra: Pick<JobRecord, "history" | "failures">,
    durationMs: number,
  ): Promise<void> {
    const failures = extra.failures ?? 0;
    if (failures >= run.route.attempts) {
      await fail(run, err, extra);
      return;
    }
    const retryAfterMs = err instanceof UpstreamStatusError ? err.retryAfterMs : undefined;
    const delayMs = retryDelayMs(failures + 1, run.route.backoff, retryAfterMs);
    const queued: JobRecord = { ...run.record, ...extra, status: JobStatus.Queued, updatedAt: Date.now(), error: toFailure(err) };
    if (!(await transition(run, queued))) {
      await lostRecord(run);
      return;
    }
    run.msg.nak(delayMs);
    log.warn(
      { job: run.job.id, route: run.route.name, attempt: run.record.attempts, durationMs, error: queued.error, retryInMs: delayMs },
      "attempt failed",
    );
  }

  function start(route: string, msg: JsMsg): void {
    const job = decodeEnvelope(msg.headers);
    if (!job || job.route !== route) {
      log.error({ subject: msg.subject, seq: msg.seq }, "dropping a message that is not a slowlane request");
      terminate(msg);
      return;
    }
    const abort = new AbortController();
    const call: RunningCall = {
      jobId: job.id,
      abort,
      done: runJob(job, msg, abort)
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
    // Pull requests expire every 5 s (nats.js's default is 30 s): after a cluster's consumer leader
    // moves, the next pull finds the new one within seconds instead of half a minute.
    const messages = await consumer.consume({ max_messages: route.concurrency, expires: PULL_EXPIRES_MS });
    const loop = (async () => {
      for await (const msg of messages) start(route.name, msg);
    })().catch((err: unknown) => log.error({ err, route: route.name }, "consumer loop stopped"));
    subscriptions.set(route.name, { messages, loop, concurrency: route.concurrency });
  }

  async function unsubscribe(route: string): Promise<void> {
    const subscription = subscriptions.get(route);
    if (!subscription) return;
    subscriptions.delete(route);
    subscription.messages.stop();
    await subscription.loop;
  }

  /** Cancel notices (core NATS, best effort: the record's compare-and-set is what makes a cancel stick). */
  function listenForCancels(): Subscription {
    return context.nc.subscribe(context.names.cancelFilter, {
      callback: (err, msg) => {
        if (err) return;
        const id = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
        for (const call of running) if (call.jobId === id) call.abort.abort(AbortReason.Canceled);
      },
    });
  }

  for (const route of config.routes) await subscribe(route);
  // Routes no longer in the config whose consumers remain: their queued jobs are still worked, with
  // the `defaults` settings (the route's own are gone with it) and the consumer's concurrency.
  const orphans = context.consumerRoutes.filter((name) => !routes.has(name));
  for (const name of orphans) {
    const route = removedRoute(name);
    routes.set(name, route);
    await subscribe(route);
  }
  if (orphans.length > 0) log.info({ routes: orphans }, "working the queued jobs of routes no longer in the config");
  const cancels = listenForCancels();
  log.info({ routes: config.routes.map((r) => r.name) }, "forwarder started");

  return {
    get inFlight() {
      return running.size;
    },
    async resubscribe(names) {
      for (const name of names) {
        const route = routes.get(name);
        if (!route) continue;
        await unsubscribe(name);
        await subscribe(route);
        log.info({ route: name }, "consumer re-created; pulling again");
      }
    },
    async reconfigure(next) {
      config = next;
      for (const route of next.routes) {
        routes.set(route.name, route);
        const current = subscriptions.get(route.name);
        if (current?.concurrency === route.concurrency) continue;
        if (current) await unsubscribe(route.name);
        await subscribe(route);
      }
      const removed = [...subscriptions.keys()].filter((name) => !next.routes.some((r) => r.name === name));
      if (removed.length > 0) log.info({ routes: removed }, "routes removed from the config; their queued jobs are still worked");
    },
    async close(drainMs = 25_000) {
      await Promise.all([...subscriptions.keys()].map(unsubscribe));
      cancels.unsubscribe();
      const all = Promise.all([...running].map((c) => c.done));
      // An unref'd timer: once the calls are done, nothing is left holding the process open.
      const drained = await Promise.race([all.then(() => true), sleep(drainMs, false, { ref: false })]);
      if (!drained) {
        log.warn({ inFlight: running.size }, "drain timeout: aborting running calls; they go back to the queue");
        for (const call of running) call.abort.abort(AbortReason.Shutdown);
        await all;
      }
      if (ownsAgent) await agent.close();
    },
  };
}
