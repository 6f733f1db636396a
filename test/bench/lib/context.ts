/** Settings of a benchmark run, and a stack of things a scenario started, closed in reverse. */
import { join } from "node:path";
import { startNatsServer } from "../../../scripts/nats-server.js";
import type { NatsServer } from "../../../scripts/nats-server.js";
import { startBaseline, WORK_DIR } from "./procs.js";
import type { Proc } from "./procs.js";

export interface BenchContext {
  /** Seconds per measured load run (`BENCH_DURATION`). */
  durationS: number;
  /** Seconds of the warm-up run before them. */
  warmupS: number;
  /** Measured runs per figure (`BENCH_RUNS`). */
  runs: number;
  /** Jobs for the memory scenarios (`BENCH_JOBS`, default 100 000). */
  jobs: number;
  /** Jobs per drain measurement (`BENCH_DRAIN_JOBS`). */
  drainJobs: number;
  /** Finished jobs polled round robin in the cache-miss scenario (`BENCH_POLL_IDS`, more than the LRU's 10 000). */
  pollIds: number;
  /** Jobs timed in the completion-overhead scenario (`BENCH_COMPLETIONS`). */
  completions: number;
  /** Concurrent 1-byte-chunk uploads in the memory-bounds scenario (`BENCH_UPLOADS`). */
  uploads: number;
  /** Profile slowlane with --cpu-prof (`BENCH_PROFILE=1`); figures are then not for the README. */
  profile: boolean;
  log(message: string): void;
}

export function profileDir(ctx: BenchContext, name: string): string | undefined {
  return ctx.profile ? join(WORK_DIR, "profiles", name) : undefined;
}

export class Stack {
  #closers: (() => Promise<unknown>)[] = [];

  push<T extends { close?: () => Promise<unknown>; stop?: () => Promise<unknown> }>(thing: T): T {
    const close = thing.stop ? () => (thing.stop as () => Promise<unknown>)() : () => (thing.close as () => Promise<unknown>)();
    this.#closers.push(close);
    return thing;
  }

  defer(fn: () => Promise<unknown>): void {
    this.#closers.push(fn);
  }

  async close(): Promise<void> {
    for (const close of this.#closers.reverse()) await close().catch((err: unknown) => console.error("closing:", err));
    this.#closers = [];
  }

  async nats(): Promise<NatsServer> {
    const nats = await startNatsServer();
    this.defer(() => nats.close());
    return nats;
  }

  async baseline(script: string, env: NodeJS.ProcessEnv = {}): Promise<Proc & { url: string | undefined }> {
    return this.push(await startBaseline(script, env));
  }
}

/** The slowlane config every scenario starts from. */
export function slowlaneConfig(opts: {
  upstream: string;
  servers: readonly string[];
  routes: Record<string, unknown>[];
  replicas?: number;
  stream?: string;
}): Record<string, unknown> {
  return {
    listen: "127.0.0.1:0",
    upstream: opts.upstream,
    nats: {
      servers: [...opts.servers],
      stream: opts.stream ?? "BENCH",
      ackWait: "30s",
      ...(opts.replicas === undefined ? {} : { replicas: opts.replicas }),
    },
    admin: { listen: "127.0.0.1:0" },
    defaults: { timeout: "60s", ttl: "1h", attempts: 3, retryAfter: "1s" },
    routes: opts.routes,
  };
}
