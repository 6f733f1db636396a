/**
 * The processes under test: a private nats-server, one slowlane `proxy` and N `worker`s of the
 * built CLI, all real, with the faults the nemesis applies to them. Every process ever started is
 * kept (dead ones too) so a lost job can be traced through their logs.
 */
import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { JOBS } from "../helpers/jobs.js";
import { getFreePort, startNatsServer } from "../helpers/nats.js";
import type { NatsServer } from "../helpers/nats.js";
import { spawnSlowlane, uniqueStream, waitForLog, writeConfigFile } from "../helpers/slowlane.js";
import type { ChildSlowlane } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";
import { createProxyClient } from "./proxy-client.js";
import type { ProxyClient } from "./proxy-client.js";
import { pick } from "./random.js";
import type { Random } from "./random.js";

/** A well-formed id no job has: the proxy answers 404 once it can read JetStream, 503 before. */
const PROBE_ID = "AAAAAAAAAAAAAAAAAAAAAA";
/** How long a process may take to come back (start-up on two busy cores, NATS recovering its store). */
const RECOVERY_TIMEOUT_MS = 30_000;

export interface FaultClusterOptions {
  backendUrl: string;
  workers: number;
  /** Route concurrency: backend calls in flight at most, across every worker. */
  concurrency: number;
  /** Child log level; `info` keeps every job transition, which is what a lost job is traced by. */
  logLevel?: string;
}

export type ProcessRole = "proxy" | "worker";

export interface ClusterProcess {
  readonly role: ProcessRole;
  /** `proxy-1`, `worker-3`: numbered in start order. */
  readonly name: string;
  readonly process: ChildSlowlane;
}

export interface FaultCluster {
  readonly proxyUrl: string;
  readonly nats: NatsServer;
  /** The `nats.stream` prefix, unique to this run. */
  readonly stream: string;
  /** Every slowlane process started, dead ones included. */
  readonly processes: readonly ClusterProcess[];
  /** SIGKILLs a random live worker, starts a new one and waits until it pulls. */
  killWorker(random: Random): Promise<string>;
  /** SIGKILLs the proxy and starts it again on the same port; resolves once it can accept. */
  killProxy(): Promise<void>;
  /** Stops nats-server with `signal`, starts it on the same port and store; resolves once the proxy can accept. */
  restartNats(signal: NodeJS.Signals): Promise<void>;
  /** Resolves once nats-server, the proxy and all N workers are up and the proxy reads JetStream. */
  heal(): Promise<void>;
  close(): Promise<void>;
}

/** Children alive right now, SIGKILLed if the test process exits without `close()`. */
const liveChildren = new Set<ChildSlowlane>();
process.once("exit", () => {
  for (const child of liveChildren) child.child.kill("SIGKILL");
});

function isAlive(p: ChildSlowlane): boolean {
  return p.child.exitCode === null && p.child.signalCode === null;
}

export async function startFaultCluster(options: FaultClusterOptions): Promise<FaultCluster> {
  const processes: ClusterProcess[] = [];
  const counters = { proxy: 0, worker: 0 };
  let nats: NatsServer | undefined;
  let configFile: string | undefined;
  let probe: ProxyClient | undefined;
  let closed = false;

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await probe?.close();
    await Promise.all(processes.map((p) => p.process.kill("SIGKILL")));
    await nats?.close();
    if (configFile) rmSync(dirname(configFile), { recursive: true, force: true });
  };

  try {
    nats = await startNatsServer();
    const port = await getFreePort();
    const stream = uniqueStream("faults");
    configFile = writeConfigFile({
      listen: `127.0.0.1:${port}`,
      upstream: options.backendUrl,
      nats: { servers: nats.url, stream, ackWait: "2s" },
      defaults: { ttl: "1h", retryAfter: "1s" },
      // Few attempts and short backoffs: without the route's circuit, the backend's outage (a few
      // seconds) would use up every attempt of the jobs running or queued then, and fail them.
      routes: [
        {
          name: "jobs",
          methods: ["POST"],
          path: "/work/**",
          attempts: 5,
          timeout: "30s",
          concurrency: options.concurrency,
          backoff: { initial: "200ms", max: "2s" },
        },
      ],
    });
    const proxyUrl = `http://127.0.0.1:${port}`;
    const client = (probe = createProxyClient(proxyUrl, 1));
    const file = configFile;
    const server = nats;

    const spawn = (role: ProcessRole): ChildSlowlane => {
      counters[role] += 1;
      const child = spawnSlowlane(role, file, { LOG_LEVEL: options.logLevel ?? "info" });
      processes.push({ role, name: `${role}-${counters[role]}`, process: child });
      liveChildren.add(child);
      void child.exited.then(() => liveChildren.delete(child));
      return child;
    };
    const live = (role: ProcessRole): ClusterProcess[] => processes.filter((p) => p.role === role && isAlive(p.process));

    /** The proxy answers the probe with 404: it listens, is connected and has set JetStream up. */
    const proxyCanAccept = (): Promise<unknown> =>
      waitFor(
        async () => {
          const answer = await client.send("GET", `${JOBS}/${PROBE_ID}`).catch(() => undefined);
          return answer?.status === 404;
        },
        { timeoutMs: RECOVERY_TIMEOUT_MS, intervalMs: 50, what: "the proxy to read JetStream again" },
      );

    const startWorker = async (): Promise<void> => {
      const worker = spawn("worker");
      await waitForLog(worker.logs, "forwarder started", RECOVERY_TIMEOUT_MS);
    };

    const startProxy = async (): Promise<void> => {
      spawn("proxy");
      await proxyCanAccept();
    };

    await Promise.all([startProxy(), ...Array.from({ length: options.workers }, startWorker)]);

    return {
      proxyUrl,
      nats: server,
      stream,
      processes,
      async killWorker(random) {
        const victim = pick(random, live("worker"));
        await victim.process.kill("SIGKILL");
        await startWorker();
        return `${victim.name} (replaced by worker-${counters.worker})`;
      },
      async killProxy() {
        for (const proxy of live("proxy")) await proxy.process.kill("SIGKILL");
        await startProxy();
      },
      async restartNats(signal) {
        await server.restart(signal);
        await proxyCanAccept();
      },
      async heal() {
        if (server.pid === undefined) await server.restart();
        if (live("proxy").length === 0) spawn("proxy");
        const missing = options.workers - live("worker").length;
        await Promise.all([proxyCanAccept(), ...Array.from({ length: Math.max(0, missing) }, startWorker)]);
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
