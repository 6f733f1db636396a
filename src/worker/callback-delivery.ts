/**
 * Callback delivery, in worker processes: pulls deliveries from the callback stream (queued by a
 * job's final transition), makes one signed POST per delivery (`deliverCallback`), then acks it,
 * retries it with the route's backoff (or the receiver's `Retry-After`), or gives up after the
 * route's `attempts`. Each outcome is written on the job's record (`callback: { status, attempts,
 * lastError }`) and every proxy is told to drop its cached copy of the job.
 *
 * At least once: a delivery leaves the stream only once acked, after its attempt; a worker that
 * dies mid-attempt leaves it to be redelivered after the consumer's AckWait. Receivers drop
 * repeats by `webhook-id`, which is the same on every attempt of one delivery.
 */
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream";
import type { Agent } from "undici";
import { callbackPolicyOf, createCallbackDispatcher, decodeDelivery, deliverCallback, loadWebhookSecret } from "../callbacks/index.js";
import type { CallbackDelivery, DeliveryOutcome } from "../callbacks/index.js";
import { routeTableOf } from "../config/index.js";
import type { Config, RouteConfig } from "../config/index.js";
import type { CallbacksConfig } from "../config/types.js";
import type { Logger } from "../log.js";
import { publishCancelNotice } from "../jobs/cancel.js";
import { CallbackStatus } from "../jobs/record.js";
import type { CallbackState } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { recordCallback } from "../jobs/transitions.js";
import { retryDelayMs } from "../shared/retry-policy.js";

/** How one delivery attempt ended, for metrics: delivered, will be tried again, or given up. */
export const CallbackOutcomes = ["delivered", "retry", "failed"] as const;
export type CallbackOutcome = (typeof CallbackOutcomes)[number];

/** Told of every delivery attempt. Must not throw. */
export interface CallbackDeliveryObserver {
  callbackAttempted(route: string, outcome: CallbackOutcome): void;
}

export interface CallbackDeliveryOptions {
  /** The config in force (routes' `callbacks`, `attempts` and `backoff` are read at each attempt). */
  config: () => Config;
  store: JobStore;
  log: Logger;
  observer?: CallbackDeliveryObserver;
  /** One attempt's limit, from resolving the host to the answer's headers; default 15 s. */
  timeoutMs?: number;
}

export interface CallbackDeliverer {
  /** Deliveries being attempted now, in this process. */
  readonly inFlight: number;
  /** Stops pulling, lets attempts in flight finish for up to `drainMs`, then aborts them (they are redelivered). */
  close(drainMs?: number): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 15_000;
/** How long one pull request waits on the server. */
const PULL_EXPIRES_MS = 5_000;
const PULL_BATCH = 16;

/** Dispatchers by allow list: connections only to addresses the route's policy allows (checked at connect). */
class Dispatchers {
  readonly #byAllow = new Map<string, Agent>();

  of(callbacks: CallbacksConfig): Agent {
    const key = callbacks.allow.join("\n");
    let agent = this.#byAllow.get(key);
    if (agent === undefined) {
      agent = createCallbackDispatcher(callbackPolicyOf(callbacks));
      this.#byAllow.set(key, agent);
    }
    return agent;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#byAllow.values()].map((a) => a.destroy()));
    this.#byAllow.clear();
  }
}

/** One attempt: the signed POST, or why it could not be made. */
async function attempt(
  options: CallbackDeliveryOptions & { dispatchers: Dispatchers },
  delivery: CallbackDelivery,
  route: RouteConfig,
  body: string,
  signal: AbortSignal,
): Promise<DeliveryOutcome> {
  const { callbacks } = route;
  if (!callbacks) return { kind: "refused", reason: `route ${route.name} no longer has callbacks` };
  let secret: string;
  try {
    secret = loadWebhookSecret(callbacks.secretFile);
  } catch (err) {
    options.log.error({ err, route: route.name }, "callback secret unavailable; the delivery will be retried");
    return { kind: "retry", reason: "the callback could not be signed (slowlane's secret is unavailable)" };
  }
  return deliverCallback({
    url: delivery.url,
    secret,
    deliveryId: delivery.deliveryId,
    body,
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    dispatcher: options.dispatchers.of(callbacks),
    signal,
  });
}

/** What an outcome means at attempt `attempts` of a route allowing `route.attempts`. */
function toState(outcome: DeliveryOutcome, attempts: number, route: RouteConfig): { state: Omit<CallbackState, "url">; retryInMs?: number } {
  if (outcome.kind === "delivered") return { state: { status: CallbackStatus.Delivered, attempts } };
  const lastError = outcome.reason;
  if (outcome.kind === "retry" && attempts < route.attempts) {
    const retryInMs = retryDelayMs(attempts + 1, route.backoff, outcome.retryAfterMs);
    return { state: { status: CallbackStatus.Pending, attempts, lastError }, retryInMs };
  }
  return { state: { status: CallbackStatus.Failed, attempts, lastError } };
}

/** Writes the outcome on the job's record; proxies drop their cached copy. The state is for show: a failed write is logged only. */
async function record(options: CallbackDeliveryOptions, delivery: CallbackDelivery, state: Omit<CallbackState, "url">): Promise<void> {
  try {
    if (await recordCallback(options.store, delivery.id, delivery.finalAt, state)) publishCancelNotice(options.store.context, delivery.id);
  } catch (err) {
    options.log.warn({ err, job: delivery.id }, "could not record the callback's state");
  }
}

/** Handles one delivery message: attempt, record, then ack, nak or terminate. */
async function handle(options: CallbackDeliveryOptions & { dispatchers: Dispatchers }, msg: JsMsg, signal: AbortSignal): Promise<void> {
  const { log } = options;
  const delivery = decodeDelivery(msg.headers);
  if (!delivery) {
    log.error({ subject: msg.subject, seq: msg.seq }, "dropping a message that is not a slowlane callback delivery");
    msg.term();
    return;
  }
  const route = routeTableOf(options.config()).settingsOf(delivery.route);
  const attempts = msg.info.deliveryCount;
  let outcome: DeliveryOutcome;
  try {
    outcome = await attempt(options, delivery, route, msg.string(), signal);
  } catch (err) {
    // Shut down mid-attempt: another worker takes it at once.
    msg.nak(0);
    if (!signal.aborted) log.error({ err, job: delivery.id }, "callback attempt broke; it will be retried");
    return;
  }
  const { state, retryInMs } = toState(outcome, attempts, route);
  await record(options, delivery, state);
  const done = { job: delivery.id, route: route.name, attempts, deliveryId: delivery.deliveryId };
  if (state.status === CallbackStatus.Delivered) {
    msg.ack();
    log.info(done, "callback delivered");
    options.observer?.callbackAttempted(route.name, "delivered");
  } else if (retryInMs !== undefined) {
    msg.nak(retryInMs);
    log.warn({ ...done, error: state.lastError, retryInMs }, "callback attempt failed");
    options.observer?.callbackAttempted(route.name, "retry");
  } else {
    msg.term();
    log.warn({ ...done, error: state.lastError }, "callback given up");
    options.observer?.callbackAttempted(route.name, "failed");
  }
}

/** Starts delivering callbacks from the workers' consumer (provisioned by `provision` for workers). */
export async function createCallbackDelivery(options: CallbackDeliveryOptions): Promise<CallbackDeliverer> {
  const { store, log } = options;
  const { context } = store;
  const dispatchers = new Dispatchers();
  const deps = { ...options, dispatchers };
  const running = new Set<Promise<void>>();
  const abort = new AbortController();
  const consumer = await context.js.consumers.get(context.names.callbackStream, context.names.callbackConsumer);
  const messages: ConsumerMessages = await consumer.consume({ max_messages: PULL_BATCH, expires: PULL_EXPIRES_MS });
  const loop = (async () => {
    for await (const msg of messages) {
      const run: Promise<void> = handle(deps, msg, abort.signal)
        .catch((err: unknown) => log.error({ err, subject: msg.subject }, "callback delivery failed"))
        .finally(() => running.delete(run));
      running.add(run);
    }
  })().catch((err: unknown) => log.error({ err }, "callback delivery loop stopped"));

  return {
    get inFlight() {
      return running.size;
    },
    async close(drainMs = 25_000) {
      messages.stop();
      await loop;
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          abort.abort(new Error("shutting down"));
          resolve();
        }, drainMs);
        timer.unref();
      });
      await Promise.race([Promise.all(running), late]);
      await Promise.all(running);
      clearTimeout(timer);
      await dispatchers.close();
    },
  };
}
