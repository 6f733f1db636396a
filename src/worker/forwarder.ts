/**
 * The forwarder: the consume loop of a worker process. It pulls accepted requests from each
 * route's consumer and hands each to `attempt.ts`; it follows config reloads, re-subscribes to
 * consumers re-created after a NATS restart, aborts calls of canceled jobs, and drains on close.
 *
 * - The consumer's MaxAckPending is the route's concurrency: the server, not this process, bounds
 *   the calls in flight across all workers. Each subscription pulls at most that many.
 * - A route removed from the config keeps being pulled from while its consumer exists: its queued
 *   jobs are worked with the `defaults` settings.
 * - Each route has a circuit in this process (`circuit-board.ts`): while its backend is
 *   unreachable, the route's messages are taken and given back with a delay (nak), uncounted,
 *   rather than left unpulled: the consumer's MaxAckPending still bounds them, the server keeps
 *   redelivering them to whichever worker's circuit is closed, and a held job's deadline is
 *   checked each time it comes back.
 * - A reload that lowers AckWait is prepared before the consumers change (`prepare`): every
 *   running call heartbeats at once and from then on at the new period.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import type { Agent } from "undici";
import { routeTableOf } from "../config/index.js";
import type { Config, RouteConfig } from "../config/index.js";
import type { Logger } from "../log.js";
import { subscribeCancelNotices } from "../jobs/cancel.js";
import type { JobStore } from "../jobs/store.js";
import { jobsMaxAgeMs } from "../nats/provision.js";
import { DISABLED_TRACING } from "../tracing/index.js";
import type { Tracing } from "../tracing/index.js";
import { AbortReason, runAttempt } from "./attempt.js";
import type { AttemptDeps, CallControl } from "./attempt.js";
import { createBackendAgent } from "./backend-call.js";
import { createCircuitBoard } from "./circuit-board.js";
import type { CircuitBoard } from "./circuit-board.js";
import type { ForwarderObserver } from "./observer.js";
import { identifyJob } from "./request-check.js";
import { GiveBackError } from "./run.js";
import { rejectRequest } from "./settle.js";

export type { ForwarderObserver } from "./observer.js";
export { MAX_INTERRUPTIONS } from "./attempt.js";

/** How long one pull request waits on the server (see `subscribe`). */
const PULL_EXPIRES_MS = 5_000;
/** Shortest heartbeat period, whatever AckWait is. */
const MIN_HEARTBEAT_MS = 50;
/** Wait before a message given back for our own trouble (a NATS write that failed) is delivered again. */
const GIVE_BACK_DELAY_MS = 1_000;

export interface ForwarderOptions {
  config: Config;
  store: JobStore;
  log: Logger;
  /** The undici Agent for backend calls; one is created (and closed) when not given. */
  agent?: Agent;
  observer?: ForwarderObserver;
  /** Spans for attempts and backend calls; default off. */
  tracing?: Tracing;
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
   * route's consumer is still drained. Call after `provision` has created the new routes' consumers.
   */
  reconfigure(config: Config): Promise<void>;
  /**
   * Gets running calls ready for a config about to be provisioned, before JetStream applies it: a
   * lower `nats.ackWait` or a shorter jobs-bucket age (`ttl` + `timeout`) takes effect for the
   * heartbeats at once, every running call heartbeats now, and records old enough to age out
   * under the new settings are written again. Resolves once they are.
   */
  prepare(next: Config): Promise<void>;
}

interface RunningCall {
  readonly jobId: string;
  readonly done: Promise<void>;
  readonly control: CallControl;
}

interface Subscription {
  readonly messages: ConsumerMessages;
  readonly loop: Promise<void>;
  readonly concurrency: number;
}

/** The state of one forwarder: the config in force, the calls running and the consumers pulled from. */
class ForwarderState {
  readonly running = new Set<RunningCall>();
  readonly subscriptions = new Map<string, Subscription>();
  /** Settings of every route pulled from, removed ones included (their queues are still drained). */
  readonly routes = new Map<string, RouteConfig>();
  readonly deps: AttemptDeps;
  /** A config about to be provisioned (see `prepare`); its shorter AckWait and record age already apply. */
  prepared: Config | undefined;

  constructor(
    public config: Config,
    readonly options: ForwarderOptions,
    agent: Agent,
    readonly circuits: CircuitBoard,
  ) {
    for (const route of config.routes) this.routes.set(route.name, route);
    const { store, log, observer } = options;
    this.deps = {
      store,
      log,
      agent,
      observer,
      tracing: options.tracing ?? DISABLED_TRACING,
      backendUrl: () => this.config.upstream,
      heartbeatMs: () => Math.max(MIN_HEARTBEAT_MS, Math.floor(Math.min(this.ackWaitMs(), this.recordMaxAgeMs()) / 3)),
      recordRefreshMs: () => Math.floor(this.recordMaxAgeMs() / 3),
    };
  }

  get log(): Logger {
    return this.options.log;
  }

  /** The consumers' AckWait now, or soon: the lower of the config in force and one being provisioned. */
  ackWaitMs(): number {
    return Math.min(this.config.nats.ackWaitMs, this.prepared?.nats.ackWaitMs ?? Infinity);
  }

  /** The jobs bucket's max_age now, or soon (as {@link ackWaitMs}). */
  recordMaxAgeMs(): number {
    return Math.min(jobsMaxAgeMs(this.config), this.prepared ? jobsMaxAgeMs(this.prepared) : Infinity);
  }

  /** Starts one delivered message; never throws (a message that names no job is terminated). */
  start(route: string, msg: JsMsg): void {
    const found = identifyJob(this.options.store.context.names, route, msg, this.options.store.sealer);
    if (!found) {
      this.log.error({ subject: msg.subject, seq: msg.seq }, "dropping a message that is not a slowlane request");
      msg.term();
      return;
    }
    const { job, rejection } = found;
    const settings = this.routes.get(route) ?? routeTableOf(this.config).settingsOf(route);
    const control: CallControl = { abort: new AbortController(), gate: this.circuits.gate(settings), refresh: undefined };
    const { signal } = control.abort;
    const attempt = rejection === undefined ? runAttempt(this.deps, job, settings, msg, control) : rejectRequest(this.deps, job, settings, msg, rejection);
    const call: RunningCall = {
      jobId: job.id,
      control,
      done: attempt
        .catch((err: unknown) => {
          // Not the backend's fault (NATS write failed, shutdown): let another attempt run it soon.
          if (!signal.aborted) this.log.error({ err, subject: msg.subject }, "job interrupted; it will be redelivered");
          msg.nak(signal.aborted ? 0 : err instanceof GiveBackError ? err.delayMs : GIVE_BACK_DELAY_MS);
        })
        .finally(() => {
          control.gate.done();
          this.running.delete(call);
        }),
    };
    this.running.add(call);
  }

  async subscribe(route: RouteConfig): Promise<void> {
    const { context } = this.options.store;
    const consumer = await context.js.consumers.get(context.names.stream, context.names.consumer(route.name));
    // Pull requests expire every 5 s (nats.js's default is 30 s): after a cluster's consumer leader
    // moves, the next pull finds the new one within seconds instead of half a minute.
    const messages = await consumer.consume({ max_messages: route.concurrency, expires: PULL_EXPIRES_MS });
    const loop = (async () => {
      for await (const msg of messages) this.start(route.name, msg);
    })().catch((err: unknown) => this.log.error({ err, route: route.name }, "consumer loop stopped"));
    this.subscriptions.set(route.name, { messages, loop, concurrency: route.concurrency });
  }

  async unsubscribe(route: string): Promise<void> {
    const subscription = this.subscriptions.get(route);
    if (!subscription) return;
    this.subscriptions.delete(route);
    subscription.messages.stop();
    await subscription.loop;
  }

  abortJob(id: string, reason: AbortReason): void {
    for (const call of this.running) if (call.jobId === id) call.control.abort.abort(reason);
  }
}

/** Subscribes to the configured routes, and to the consumers of routes no longer configured. */
async function subscribeAll(state: ForwarderState): Promise<void> {
  for (const route of state.config.routes) await state.subscribe(route);
  const orphans = state.options.store.context.consumerRoutes.filter((name) => !state.routes.has(name));
  for (const name of orphans) {
    const route = routeTableOf(state.config).settingsOf(name);
    state.routes.set(name, route);
    await state.subscribe(route);
  }
  if (orphans.length > 0) state.log.info({ routes: orphans }, "working the queued jobs of routes no longer in the config");
}

async function reconfigure(state: ForwarderState, next: Config): Promise<void> {
  state.config = next;
  state.prepared = undefined;
  for (const route of next.routes) {
    state.routes.set(route.name, route);
    const current = state.subscriptions.get(route.name);
    if (current?.concurrency === route.concurrency) continue;
    if (current) await state.unsubscribe(route.name);
    await state.subscribe(route);
  }
  const removed = [...state.subscriptions.keys()].filter((name) => !next.routes.some((r) => r.name === name));
  if (removed.length > 0) state.log.info({ routes: removed }, "routes removed from the config; their queued jobs are still worked");
}

/** Stops pulling, waits up to `drainMs` for running calls, then aborts them (they go back to the queue). */
async function drain(state: ForwarderState, drainMs: number): Promise<void> {
  await Promise.all([...state.subscriptions.keys()].map((name) => state.unsubscribe(name)));
  const all = Promise.all([...state.running].map((c) => c.done));
  // An unref'd timer: once the calls are done, nothing is left holding the process open.
  const drained = await Promise.race([all.then(() => true), sleep(drainMs, false, { ref: false })]);
  if (!drained) {
    state.log.warn({ inFlight: state.running.size }, "drain timeout: aborting running calls; they go back to the queue");
    for (const call of state.running) call.control.abort.abort(AbortReason.Shutdown);
    await all;
  }
}

/** See {@link Forwarder.prepare}. */
async function prepare(state: ForwarderState, next: Config): Promise<void> {
  const lowers = next.nats.ackWaitMs < state.ackWaitMs() || jobsMaxAgeMs(next) < state.recordMaxAgeMs();
  state.prepared = next;
  if (!lowers) return;
  await Promise.all([...state.running].map((call) => call.control.refresh?.()));
  // The heartbeats are on the wire before the request that lowers AckWait.
  await state.options.store.context.nc.flush().catch(() => undefined);
}

export async function createForwarder(options: ForwarderOptions): Promise<Forwarder> {
  const agent = options.agent ?? createBackendAgent();
  const circuits = createCircuitBoard({ context: options.store.context, log: options.log, observer: options.observer });
  const state = new ForwarderState(options.config, options, agent, circuits);
  await subscribeAll(state);
  const cancels = subscribeCancelNotices(options.store.context, (id) => state.abortJob(id, AbortReason.Canceled));
  state.log.info({ routes: options.config.routes.map((r) => r.name) }, "forwarder started");

  return {
    get inFlight() {
      return state.running.size;
    },
    async resubscribe(names) {
      for (const name of names) {
        const route = state.routes.get(name);
        if (!route) continue;
        await state.unsubscribe(name);
        await state.subscribe(route);
        state.log.info({ route: name }, "consumer re-created; pulling again");
      }
    },
    reconfigure: (next) => reconfigure(state, next),
    prepare: (next) => prepare(state, next),
    async close(drainMs = 25_000) {
      cancels.unsubscribe();
      await drain(state, drainMs);
      await circuits.close();
      if (options.agent === undefined) await agent.close();
    },
  };
}
