/**
 * The nemesis: applies a planned list of faults to the cluster, one at a time. Each fault waits
 * until it is due (the runner spaces them over the submissions), is applied, waits for the
 * process it hit to be back, then for the system to make progress before the next one.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { FaultBackend } from "./fault-backend.js";
import type { FaultCluster } from "./fault-cluster.js";
import { shuffle } from "./random.js";
import type { Random } from "./random.js";

export const Fault = {
  WorkerKill: "worker-kill",
  ProxyKill: "proxy-kill",
  NatsTerm: "nats-sigterm",
  NatsKill: "nats-sigkill",
  /** The backend killed (connections cut, port closed) for a while, then started again: the routes pause. */
  BackendKill: "backend-kill",
} as const;
export type Fault = (typeof Fault)[keyof typeof Fault];

/** How many of each fault to plan, or that were applied. */
export type FaultCounts = Record<Fault, number>;

export function noFaults(): FaultCounts {
  return { [Fault.WorkerKill]: 0, [Fault.ProxyKill]: 0, [Fault.NatsTerm]: 0, [Fault.NatsKill]: 0, [Fault.BackendKill]: 0 };
}

/** Every planned fault once, in a random order. */
export function planFaults(counts: FaultCounts, random: Random): Fault[] {
  const all = (Object.entries(counts) as [Fault, number][]).flatMap(([fault, n]) => Array<Fault>(n).fill(fault));
  return shuffle(random, all);
}

/** One applied fault, for the timeline printed next to a lost job's logs. */
export interface FaultEvent {
  /** Epoch ms when it was applied (pino's `time` in the children's logs is comparable). */
  at: number;
  fault: Fault;
  detail: string;
}

export interface NemesisOptions {
  cluster: FaultCluster;
  backend: Pick<FaultBackend, "kill" | "restart">;
  /** How long a killed backend stays down. */
  backendOutageMs: number;
  random: Random;
  plan: readonly Fault[];
  /** Resolves true when the fault at `index` in the plan is due, false when the run is over without it. */
  due(index: number): Promise<boolean>;
  /** Resolves once the system has made progress since the last fault. */
  settle(): Promise<void>;
  /** Filled in as faults are applied, so the counts are right even when one fails. */
  applied: FaultCounts;
  timeline: FaultEvent[];
  /** Progress lines: how long each fault took to heal. */
  note?: (line: string) => void;
}

export async function runNemesis(options: NemesisOptions): Promise<void> {
  const { cluster, random, applied, timeline } = options;
  for (const [index, fault] of options.plan.entries()) {
    if (!(await options.due(index))) return;
    const at = Date.now();
    let detail = "";
    switch (fault) {
      case Fault.WorkerKill:
        detail = `SIGKILL ${await cluster.killWorker(random)}`;
        break;
      case Fault.ProxyKill:
        await cluster.killProxy();
        detail = "SIGKILL the proxy";
        break;
      case Fault.NatsTerm:
        await cluster.restartNats("SIGTERM");
        detail = "restart nats-server (SIGTERM)";
        break;
      case Fault.NatsKill:
        await cluster.restartNats("SIGKILL");
        detail = "restart nats-server (SIGKILL)";
        break;
      case Fault.BackendKill:
        await options.backend.kill();
        await sleep(options.backendOutageMs);
        await options.backend.restart();
        detail = `kill the backend for ${options.backendOutageMs} ms`;
        break;
    }
    applied[fault] += 1;
    const back = Date.now();
    timeline.push({ at, fault, detail: `${detail}; back after ${back - at} ms` });
    await options.settle();
    options.note?.(`${detail}: back after ${back - at} ms, progress after ${Date.now() - back} ms more`);
  }
}
