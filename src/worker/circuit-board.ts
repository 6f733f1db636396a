/**
 * The circuits of this worker process, one per route (`circuit.ts`), and what makes them visible:
 * a log line when one opens or closes, the observer (the `slowlane_route_circuit_open` gauge), and
 * a key per open circuit in the circuits KV bucket, which `slowlane jobs list` reads from any
 * process to show the paused routes. The key is rewritten while the circuit stays open and
 * deleted when it closes; a worker that dies leaves it to the bucket's max_age.
 *
 * Circuits are per process: each worker finds out on its own that the backend is down (its first
 * unreachable call) and that it is back (its first answer).
 */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { RouteConfig } from "../config/index.js";
import type { Logger } from "../log.js";
import type { JetStreamContext } from "../nats/context.js";
import { CIRCUIT_STATE_MAX_AGE_MS } from "../nats/provision.js";
import { RouteCircuit } from "./circuit.js";
import type { Admission } from "./circuit.js";
import type { ForwarderObserver } from "./observer.js";

/** What one delivery may do about the backend, and what it tells the route's circuit. */
export interface CallGate {
  readonly admission: Admission;
  /** The backend call is being made (a probe that ends without an answer then waits the backoff). */
  calling(): void;
  /** The backend answered (any HTTP status): the route's circuit closes. */
  answered(): void;
  /** The backend could not be reached: opens the circuit; true when the failure costs the job nothing. */
  unreachable(detail: string): boolean;
  /** How long a job given back to the queue now, because the route is paused, waits before it comes back. */
  holdDelayMs(): number;
  /** The delivery is over (called once, however it ended). */
  done(): void;
}

/** What `slowlane jobs list` reads back: one worker process's open circuit of a route. */
export interface OpenCircuitState {
  readonly route: string;
  readonly worker: string;
  readonly host: string;
  readonly pid: number;
  /** Epoch ms when the circuit opened. */
  readonly openedAt: number;
}

export interface CircuitBoard {
  /** The gate of a delivery of `route` taken now. */
  gate(route: RouteConfig): CallGate;
  /** Routes whose circuit is open in this process. */
  openRoutes(): string[];
  close(): Promise<void>;
}

const REFRESH_MS = Math.floor(CIRCUIT_STATE_MAX_AGE_MS / 3);
const encoder = new TextEncoder();

export function createCircuitBoard(options: { context: JetStreamContext; log: Logger; observer: ForwarderObserver | undefined }): CircuitBoard {
  const { context, log, observer } = options;
  const worker = randomBytes(8).toString("base64url");
  const circuits = new Map<string, RouteCircuit>();
  const publisher = createStatePublisher(context, worker, log);

  const circuitOf = (route: string): RouteCircuit => {
    let circuit = circuits.get(route);
    if (!circuit) {
      circuit = new RouteCircuit();
      circuits.set(route, circuit);
    }
    return circuit;
  };

  const refresh = setInterval(() => {
    for (const [route, circuit] of circuits) if (circuit.isOpen) publisher.put(route, circuit.since ?? Date.now());
  }, REFRESH_MS);
  refresh.unref();

  function opened(route: RouteConfig, circuit: RouteCircuit, detail: string): void {
    log.warn({ route: route.name, detail, nextProbeInMs: route.backoff.initialMs }, "backend unreachable: route paused (circuit open in this worker)");
    observer?.circuitChanged?.(route.name, true);
    publisher.put(route.name, circuit.since ?? Date.now());
  }

  function closed(route: string, openedAt: number | undefined): void {
    log.info({ route, pausedMs: openedAt === undefined ? undefined : Date.now() - openedAt }, "backend answered: route resumed (circuit closed)");
    observer?.circuitChanged?.(route, false);
    publisher.remove(route);
  }

  function gate(route: RouteConfig): CallGate {
    const circuit = circuitOf(route.name);
    const admission = circuit.admit(route.backoff);
    let called = false;
    let over = false;
    return {
      admission,
      calling: () => void (called = true),
      answered() {
        const since = circuit.since;
        if (circuit.answered()) closed(route.name, since);
      },
      unreachable(detail) {
        const outcome = circuit.unreachable(admission.kind === "probe", route.backoff);
        if (outcome.opened) opened(route, circuit, detail);
        else if (admission.kind === "probe") log.info({ route: route.name, detail }, "probe: the backend is still unreachable");
        return outcome.free;
      },
      holdDelayMs: () => circuit.holdDelayMs(route.backoff),
      done() {
        if (over) return;
        over = true;
        if (admission.kind === "probe") circuit.probeEnded(called);
      },
    };
  }

  return {
    gate,
    openRoutes: () => [...circuits].filter(([, c]) => c.isOpen).map(([route]) => route),
    async close() {
      clearInterval(refresh);
      await publisher.removeAll([...circuits].filter(([, c]) => c.isOpen).map(([route]) => route));
    },
  };
}

/**
 * Writes this process's open circuits to the circuits bucket, one write at a time in order (a
 * close right after an open must not be overtaken by the open's write). A failed write is only
 * logged: the state is for operators to see, nothing depends on it.
 */
function createStatePublisher(context: JetStreamContext, worker: string, log: Logger) {
  let bucket: Promise<KV> | undefined;
  let queue: Promise<unknown> = Promise.resolve();
  const key = (route: string): string => context.names.circuitKey(route, worker);

  function enqueue(write: (kv: KV) => Promise<unknown>): Promise<void> {
    const run = queue.then(async () => {
      bucket ??= new Kvm(context.js).open(context.names.circuitsBucket);
      try {
        await write(await bucket);
      } catch (err) {
        bucket = undefined;
        log.debug({ err }, "could not publish the state of a circuit");
      }
    });
    queue = run;
    return run;
  }

  return {
    put(route: string, openedAt: number): void {
      const state: OpenCircuitState = { route, worker, host: hostname(), pid: process.pid, openedAt };
      void enqueue((kv) => kv.put(key(route), encoder.encode(JSON.stringify(state))));
    },
    remove(route: string): void {
      void enqueue((kv) => kv.delete(key(route)));
    },
    removeAll(routes: readonly string[]): Promise<void> {
      return enqueue((kv) => Promise.all(routes.map((route) => kv.delete(key(route)))));
    },
  };
}
