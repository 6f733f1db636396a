/**
 * The proxy's one watch on job transitions: a single core NATS subscription to every job's events
 * (`<P>.events.>`), fanned out in memory to the requests waiting on a job (long-polls, SSE streams,
 * WebSockets, accepts that wait). A waiting request costs a map entry, no NATS work: an event for a
 * job nobody here waits on is dropped without being parsed.
 *
 * A watcher is registered before its job's record is read, and `watch` resolves only once the
 * subscription is live at the server, so a transition written after the read always arrives as an
 * event: a job that finished just before is seen by the read, one that finishes just after by the
 * event. Events are at most once (a NATS reconnect can lose some): after a reconnect every watcher
 * is asked to read its job again.
 */
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { NatsUnavailableError, WaitLimitError } from "../errors.js";
import type { Logger } from "../log.js";
import type { JobStatusBody } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";

/** One transition of a job, as published: its status JSON, parsed, and the text it came as. */
export interface JobEvent {
  readonly route: string;
  readonly body: JobStatusBody;
  readonly json: string;
}

export interface Watcher {
  /** Called with each event of the job, in arrival order. Must not throw. */
  onEvent(event: JobEvent): void;
  /** Called after NATS reconnected: events may have been lost, read the job again. */
  onResync?(): void;
  /** Called when the proxy shuts down: answer now. The watcher is removed already. */
  onClose?(): void;
}

export interface JobWatchOptions {
  /** The store while NATS is connected and set up. */
  store: () => JobStore | undefined;
  log: Logger;
  /** Requests that may wait at once on this proxy (memory bound); default {@link DEFAULT_MAX_WATCHERS}. */
  maxWatchers?: number;
  /**
   * Told of every event's route, with a way to parse the event (memoised); for the completion
   * estimate, which samples call durations. Must be cheap and not throw.
   */
  onAnyEvent?(route: string, parse: () => JobStatusBody | undefined): void;
}

export interface JobWatch {
  /**
   * Calls `watcher` with each event of job `id` from now on, until the returned function is called.
   * Resolves once the subscription is live at the server. Throws {@link WaitLimitError} when the
   * proxy holds `maxWatchers` already, {@link NatsUnavailableError} when NATS is away.
   */
  watch(id: string, watcher: Watcher): Promise<() => void>;
  /** Subscribes now if NATS is there and the subscription is not (events also feed the estimate); never throws. */
  ensure(): void;
  /** Waiting requests now. */
  readonly size: number;
  readonly maxWatchers: number;
  /** Stops watching and tells every watcher to answer now (shutdown). */
  close(): void;
}

export const DEFAULT_MAX_WATCHERS = 20_000;

interface Live {
  readonly nc: NatsConnection;
  readonly sub: Subscription;
  /** Resolves once the server has the subscription (a flush after subscribing). */
  readonly ready: Promise<void>;
}

/** The waiting requests, by job id: most jobs have one, kept without a Set of its own. */
class Registry {
  readonly byId = new Map<string, Watcher | Set<Watcher>>();
  size = 0;

  add(id: string, watcher: Watcher): void {
    const current = this.byId.get(id);
    if (current === undefined) this.byId.set(id, watcher);
    else if (current instanceof Set) current.add(watcher);
    else this.byId.set(id, new Set([current, watcher]));
    this.size += 1;
  }

  remove(id: string, watcher: Watcher): void {
    const current = this.byId.get(id);
    if (current === watcher) this.byId.delete(id);
    else if (current instanceof Set && current.delete(watcher)) {
      if (current.size === 0) this.byId.delete(id);
    } else return;
    this.size -= 1;
  }

  /** The watchers of `id`, copied (a watcher may stop while it is told). */
  of(id: string): readonly Watcher[] | undefined {
    const current = this.byId.get(id);
    return current === undefined ? undefined : current instanceof Set ? [...current] : [current];
  }

  all(): Watcher[] {
    return [...this.byId.values()].flatMap((each) => (each instanceof Set ? [...each] : [each]));
  }

  clear(): void {
    this.byId.clear();
    this.size = 0;
  }
}

/** Hands one event message to the job's watchers, parsing it only when someone needs it. */
function dispatch(registry: Registry, options: JobWatchOptions, store: JobStore, subject: string, data: () => string): void {
  const target = store.context.names.parseEventSubject(subject);
  if (!target) return;
  let parsed: { json: string; body: JobStatusBody | undefined } | undefined;
  const parse = () => {
    if (!parsed) {
      const json = data();
      try {
        parsed = { json, body: JSON.parse(json) as JobStatusBody };
      } catch {
        parsed = { json, body: undefined };
      }
    }
    return parsed;
  };
  options.onAnyEvent?.(target.route, () => parse().body);
  const waiting = registry.of(target.id);
  if (!waiting) return;
  const { json, body } = parse();
  if (!body || body.id !== target.id) return;
  const event: JobEvent = { route: target.route, body, json };
  for (const watcher of waiting) watcher.onEvent(event);
}

export function createJobWatch(options: JobWatchOptions): JobWatch {
  const { log } = options;
  const maxWatchers = options.maxWatchers ?? DEFAULT_MAX_WATCHERS;
  const registry = new Registry();
  let live: Live | undefined;
  let closed = false;

  function subscribe(store: JobStore): Live {
    const { nc, names } = store.context;
    live?.sub.unsubscribe();
    const sub = nc.subscribe(names.eventsFilter, {
      callback: (err, msg) => {
        if (!err) dispatch(registry, options, store, msg.subject, () => msg.string());
      },
    });
    const current: Live = { nc, sub, ready: nc.flush() };
    current.ready.catch(() => undefined);
    // nats.js subscribes again by itself after a reconnect; what was published meanwhile is lost.
    void (async () => {
      for await (const status of nc.status()) {
        if (live !== current) return;
        if (status.type === "reconnect") for (const watcher of registry.all()) watcher.onResync?.();
      }
    })().catch((err: unknown) => log.debug({ err }, "job watch status loop ended"));
    return current;
  }

  /** Whether `current` is a subscription on the store's connection, still open (`ready` may still be pending). */
  function isLiveOn(current: Live | undefined, store: JobStore): current is Live {
    return current !== undefined && current.nc === store.context.nc && !current.sub.isClosed();
  }

  async function ensureLive(): Promise<void> {
    const store = options.store();
    if (!store) throw new NatsUnavailableError("the job store is unavailable, retry later");
    if (!isLiveOn(live, store)) live = subscribe(store);
    try {
      await live.ready;
    } catch (err) {
      throw new NatsUnavailableError("the job store did not answer, retry later", { cause: err });
    }
  }

  return {
    async watch(id, watcher) {
      if (closed) throw new NatsUnavailableError("the proxy is shutting down");
      if (registry.size >= maxWatchers) throw new WaitLimitError(maxWatchers);
      // Counted before the await, so that a burst of requests cannot overshoot the limit.
      registry.add(id, watcher);
      try {
        await ensureLive();
      } catch (err) {
        registry.remove(id, watcher);
        throw err;
      }
      return () => registry.remove(id, watcher);
    },
    ensure() {
      // On every status poll: nothing to wait for, so no promise unless there is something to do.
      const store = options.store();
      if (!closed && store && !isLiveOn(live, store)) ensureLive().catch(() => undefined);
    },
    get size() {
      return registry.size;
    },
    maxWatchers,
    close() {
      closed = true;
      live?.sub.unsubscribe();
      live = undefined;
      const all = registry.all();
      registry.clear();
      for (const watcher of all) watcher.onClose?.();
    },
  };
}
