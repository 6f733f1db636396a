/**
 * Launcher for a private `nats-server` with JetStream, for tests, `npm run demo` and benchmarks.
 *
 * Each server gets its own free port, its own monitoring port and (unless given) its own
 * temporary store directory, so test files can run in parallel without sharing state.
 * Modelled on nats.js `nst/src/launcher.ts`.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findNatsServerBinary } from "../src/nats/embedded-server.js";
import { getFreePort } from "../src/shared/free-port.js";

const HOST = "127.0.0.1";
const DEFAULT_START_TIMEOUT_MS = 10_000;
/** After this long without exiting on SIGTERM, the server is sent SIGKILL. */
const STOP_GRACE_MS = 10_000;
const POLL_INTERVAL_MS = 25;
/** How much of the server's output is kept for error messages. */
const MAX_OUTPUT_CHARS = 64 * 1024;
const HEAD_LINES = 10;
const TAIL_LINES = 30;
/** Attempts when a free port we picked was taken by someone else before the server bound it. */
const MAX_START_ATTEMPTS = 3;

/** Options for {@link startNatsServer}. */
export interface NatsServerOptions {
  /** Client port. Default (or 0): a free port, picked once and kept across restarts. */
  port?: number;
  /** JetStream store directory. Default: a fresh `mkdtemp` directory, removed by `close()`. */
  storeDir?: string;
  /** Extra command-line arguments, appended after the launcher's own. */
  args?: string[];
  /** Path to the binary. Default: {@link findNatsServerBinary}. */
  binary?: string;
  /** How long to wait for the server to accept connections with JetStream ready, in ms. Default 10 000. */
  startTimeoutMs?: number;
}

/** A running private `nats-server`. */
export interface NatsServer {
  /** Client URL, `nats://127.0.0.1:PORT`. */
  readonly url: string;
  /** Client port; the same after restarts. */
  readonly port: number;
  /** HTTP monitoring base URL (`/healthz`, `/jsz`, `/varz`...), `http://127.0.0.1:MONITOR_PORT`. */
  readonly monitorUrl: string;
  /** JetStream store directory; the same after restarts. */
  readonly storeDir: string;
  /** Pid of the running process; `undefined` while stopped. */
  readonly pid: number | undefined;
  /** The first 10 and last 30 lines of the latest server process's stdout and stderr, for diagnostics. */
  output(): string;
  /** Sends `signal` (default SIGTERM; SIGKILL after 10 s) and resolves once the process has exited. Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Stops with `signal` (SIGTERM or SIGKILL), then starts again on the same port and store dir; resolves when ready. */
  restart(signal?: NodeJS.Signals): Promise<void>;
  /** Stops the server and removes the store dir if the launcher created it. Idempotent. */
  close(): Promise<void>;
}

/** Children still running and store dirs still owned, cleaned up if the process exits without `close()`. */
const liveChildren = new Set<ChildProcess>();
const ownedDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: kill what is left so no server outlives its parent.
  process.on("exit", () => {
    for (const child of liveChildren) child.kill("SIGKILL");
    for (const dir of ownedDirs) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // Best effort: the process is exiting anyway.
      }
    }
  });
}

/**
 * Finds the `nats-server` binary: `$NATS_SERVER_BIN`, then `nats-server` on `PATH`, then
 * `/usr/sbin/nats-server`, then `/usr/local/bin/nats-server`; throws with the install command.
 * The product's own lookup (`nats.servers: embedded`), so tests and slowlane agree.
 */
export { findNatsServerBinary };

export { getFreePort };

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves true if a TCP connection to `port` succeeds. */
function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/** Resolves true if GET `path` on the monitoring port answers 200. No keep-alive, so no handle lingers. */
function isHealthy(monitorPort: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: HOST, port: monitorPort, path, method: "GET", agent: false, timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolve(false));
    req.end();
  });
}

/**
 * Keeps the first and the last {@link MAX_OUTPUT_CHARS} characters of a child's combined stdout
 * and stderr: fatal errors come last, but a bad flag is reported first, before the usage text.
 */
class OutputBuffer {
  #head = "";
  #tail = "";
  #dropped = false;

  append(chunk: Buffer | string): void {
    const text = chunk.toString();
    if (this.#head.length < MAX_OUTPUT_CHARS) {
      this.#head += text;
      return;
    }
    this.#tail += text;
    if (this.#tail.length > MAX_OUTPUT_CHARS) {
      this.#tail = this.#tail.slice(-MAX_OUTPUT_CHARS);
      this.#dropped = true;
    }
  }

  /** The first {@link HEAD_LINES} and last {@link TAIL_LINES} lines, with a marker where lines were left out. */
  summary(): string {
    const lines = (this.#head + this.#tail).trimEnd().split("\n");
    if (lines.length <= HEAD_LINES + TAIL_LINES && !this.#dropped) return lines.join("\n");
    return [...lines.slice(0, HEAD_LINES), "[...]", ...lines.slice(-TAIL_LINES)].join("\n");
  }
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

/** One spawned process: the child, its output and a promise of its exit. */
interface Running {
  child: ChildProcess;
  output: OutputBuffer;
  exited: Promise<Exit>;
  hasExited: boolean;
}

function spawnServer(binary: string, args: string[]): Running {
  const output = new OutputBuffer();
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.on("data", (chunk: Buffer) => output.append(chunk));
  child.stderr?.on("data", (chunk: Buffer) => output.append(chunk));
  liveChildren.add(child);
  const running: Running = {
    child,
    output,
    hasExited: false,
    exited: new Promise<Exit>((resolve) => {
      const done = (exit: Exit): void => {
        running.hasExited = true;
        liveChildren.delete(child);
        resolve(exit);
      };
      // 'close' comes after 'exit' and after stdio has ended, so the captured output is complete.
      child.once("close", (code, signal) => done({ code, signal }));
      // A failed spawn (ENOENT, EACCES) emits 'error' and may never emit 'close'.
      child.once("error", (error) => {
        if (child.pid === undefined) done({ code: null, signal: null, error });
      });
    }),
  };
  return running;
}

function describeExit(exit: Exit): string {
  if (exit.error) return `failed to start (${exit.error.message})`;
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code ?? "?"}`;
}

class StartError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
    this.name = "StartError";
  }
}

/**
 * Waits until the client port accepts TCP connections and `/healthz?js-enabled-only=true`
 * answers 200. Rejects if the process exits first, or kills it and rejects when the deadline passes.
 */
async function waitUntilReady(running: Running, port: number, monitorPort: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exit: Exit | undefined;
  void running.exited.then((e) => (exit = e));
  for (;;) {
    if (exit !== undefined) {
      const out = running.output.summary();
      throw new StartError(
        `nats-server ${describeExit(exit)} before it was ready on port ${port}${out ? `:\n${out}` : ""}`,
        out.includes("address already in use"),
      );
    }
    if ((await canConnect(port)) && (await isHealthy(monitorPort, "/healthz?js-enabled-only=true"))) return;
    if (Date.now() >= deadline) {
      running.child.kill("SIGKILL");
      await running.exited;
      throw new StartError(
        `nats-server was not ready on port ${port} with JetStream within ${timeoutMs} ms:\n${running.output.summary()}`,
        false,
      );
    }
    // Wake early if the process dies, otherwise poll again shortly.
    await Promise.race([delay(POLL_INTERVAL_MS), running.exited]);
  }
}

/**
 * Starts a private `nats-server` with JetStream on 127.0.0.1
 * (`-a 127.0.0.1 -p PORT -m MONITOR_PORT -js -sd STORE_DIR ...args`) and waits until it is ready.
 *
 * Ready means the client port accepts TCP connections and the monitoring endpoint
 * `/healthz?js-enabled-only=true` answers 200. The process is killed if this process exits.
 *
 * @param opts - port, store dir, extra args, binary; all optional.
 * @returns a handle to stop, restart or close the server.
 * @throws Error with the server's output if it exits early or is not ready within `startTimeoutMs`,
 *   or with an install hint if the binary is missing.
 */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServer> {
  const binary = opts.binary ?? findNatsServerBinary();
  const timeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const extraArgs = opts.args ?? [];
  installExitHook();

  const ownsDir = opts.storeDir === undefined;
  const storeDir = opts.storeDir ?? (await mkdtemp(join(tmpdir(), "slowlane-nats-")));
  if (ownsDir) ownedDirs.add(storeDir);

  const removeOwnedDir = async (): Promise<void> => {
    if (!ownsDir) return;
    await rm(storeDir, { recursive: true, force: true });
    ownedDirs.delete(storeDir);
  };

  const launch = async (port: number, monitorPort: number): Promise<Running> => {
    const args = ["-a", HOST, "-p", String(port), "-m", String(monitorPort), "-js", "-sd", storeDir, ...extraArgs];
    const running = spawnServer(binary, args);
    await waitUntilReady(running, port, monitorPort, timeoutMs);
    return running;
  };

  // Ports we pick can be grabbed by another process between probing and binding: retry with new ones.
  let port = 0;
  let monitorPort = 0;
  let running: Running | undefined;
  for (let attempt = 1; running === undefined; attempt++) {
    // Port 0 means "any" here; passed through, nats-server would take it as its default, 4222.
    port = opts.port === undefined || opts.port === 0 ? await getFreePort() : opts.port;
    monitorPort = await getFreePort();
    try {
      running = await launch(port, monitorPort);
    } catch (err) {
      const retry = err instanceof StartError && err.addressInUse && attempt < MAX_START_ATTEMPTS;
      if (!retry) {
        await removeOwnedDir();
        throw err;
      }
    }
  }

  let current: Running | undefined = running;
  let lastOutput = running.output;
  let stopping: Promise<void> | undefined;
  let closed = false;

  const stop = (signal: NodeJS.Signals = "SIGTERM"): Promise<void> => {
    const target = current;
    if (target === undefined) return Promise.resolve();
    if (stopping !== undefined) return stopping;
    stopping = (async () => {
      if (!target.hasExited) {
        target.child.kill(signal);
        const grace = setTimeout(() => target.child.kill("SIGKILL"), STOP_GRACE_MS);
        await target.exited;
        clearTimeout(grace);
      }
      current = undefined;
      stopping = undefined;
    })();
    return stopping;
  };

  return {
    url: `nats://${HOST}:${port}`,
    port,
    monitorUrl: `http://${HOST}:${monitorPort}`,
    storeDir,
    get pid() {
      return current !== undefined && !current.hasExited ? current.child.pid : undefined;
    },
    output: () => lastOutput.summary(),
    stop,
    async restart(signal: NodeJS.Signals = "SIGTERM") {
      if (closed) throw new Error("nats-server was closed; start a new one");
      await stop(signal);
      const next = await launch(port, monitorPort);
      current = next;
      lastOutput = next.output;
    },
    async close() {
      closed = true;
      await stop();
      await removeOwnedDir();
    },
  };
}
