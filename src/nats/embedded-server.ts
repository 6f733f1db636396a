/**
 * `nats.servers: embedded`: slowlane starts its own nats-server with JetStream, so `npm start` works
 * on a machine with nothing running.
 *
 * The server listens on a free loopback port and keeps its file store under `storeDir`, so jobs
 * survive a restart of slowlane. It must never outlive slowlane, even a SIGKILLed one, and
 * nats-server does not watch its parent: it runs under a tiny `sh` supervisor whose stdin is a pipe
 * from slowlane. When slowlane dies for any reason the kernel closes the pipe, the supervisor reads
 * EOF and stops the server (SIGTERM, SIGKILL after a grace). `close()` uses the same path.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { request } from "node:http";
import { delimiter, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Logger } from "../log.js";
import { getFreePort } from "../shared/free-port.js";

/** Where to look when neither `NATS_SERVER_BIN` nor `PATH` has the binary. */
export const FALLBACK_NATS_SERVER_BINARIES = ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"] as const;

const INSTALL_HINT = "install it (apt-get install -y nats-server) or set NATS_SERVER_BIN to its path";
const HOST = "127.0.0.1";
const PID_FILE = "nats-server.pid";
const DEFAULT_START_TIMEOUT_MS = 30_000;
const DEFAULT_STOP_GRACE_MS = 10_000;
const POLL_INTERVAL_MS = 50;
/** Lines of the server's output kept for error messages. */
const KEPT_LINES = 30;
/** A free port we picked can be taken before the server binds it: try again with new ones. */
const MAX_START_ATTEMPTS = 3;

/**
 * The supervisor, run as `sh -c SCRIPT supervisor GRACE_SECONDS BINARY ARGS...`.
 *
 * - The server runs in the background with stdin from /dev/null (it must not hold the pipe).
 * - A watcher subshell blocks on the pipe (fd 3); EOF means slowlane is gone or closing: it sends
 *   SIGTERM, then SIGKILL if the server is still there after the grace.
 * - SIGTERM, SIGINT or SIGHUP sent to the supervisor are passed on to the server.
 * - The supervisor exits with the server's status as soon as the server exits by itself, so
 *   slowlane sees that exit; `wait` returns early on a trapped signal, hence the loop.
 */
const SUPERVISOR_SCRIPT = `
grace=$1; shift
exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT HUP
(
  read _ || :
  kill -TERM "$pid" 2>/dev/null || exit 0
  i=0
  while [ "$i" -lt "$grace" ] && kill -0 "$pid" 2>/dev/null; do sleep 1; i=$((i + 1)); done
  kill -KILL "$pid" 2>/dev/null
) <&3 >/dev/null 2>&1 &
watcher=$!
exec 3<&- 0</dev/null
while :; do
  wait "$pid"
  code=$?
  kill -0 "$pid" 2>/dev/null || break
done
kill "$watcher" 2>/dev/null
exit "$code"
`;

/** Options for {@link startEmbeddedNats}. */
export interface EmbeddedNatsOptions {
  /** JetStream file store directory; created if missing; a relative path is resolved against the working directory. */
  storeDir: string;
  /** The server's lines go to `log.child({ component: "nats-server" })`. */
  log: Logger;
  /** Path of the nats-server binary. Default: {@link findNatsServerBinary}. */
  binary?: string;
  /** Environment for finding the binary (`NATS_SERVER_BIN`, `PATH`) and for the server. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** How long to wait for JetStream to be ready, in ms (recovering a large store takes a while). Default 30 000. */
  startTimeoutMs?: number;
  /** After `close()` or slowlane's death, how long the server may take to stop before SIGKILL, in ms. Default 10 000. */
  stopGraceMs?: number;
}

/** How the embedded server ended. */
export interface EmbeddedNatsExit {
  /** The server's exit code (`128 + n` when killed by signal n), or null if its supervisor was killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when `close()` asked for it; false when the server exited by itself or was killed. */
  expected: boolean;
}

/** A running embedded nats-server. */
export interface EmbeddedNats {
  /** Client URL, `nats://127.0.0.1:PORT`. */
  readonly url: string;
  /** Pid of the nats-server process itself (not of its supervisor). */
  readonly pid: number;
  /** HTTP monitoring base URL (`/healthz`, `/jsz`, `/varz`), on loopback. */
  readonly monitorUrl: string;
  /** Absolute JetStream store directory. */
  readonly storeDir: string;
  /** Resolves once the server has exited, for whatever reason. */
  readonly exited: Promise<EmbeddedNatsExit>;
  /** Stops the server gracefully (SIGTERM, SIGKILL after the grace) and resolves once it has exited. Idempotent. */
  close(): Promise<void>;
}

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds the nats-server binary: `NATS_SERVER_BIN`, then `nats-server` on `PATH`, then the
 * {@link FALLBACK_NATS_SERVER_BINARIES}. A `NATS_SERVER_BIN` that is not an executable file is an
 * error rather than a reason to fall back, so a typo never silently runs another version.
 *
 * @throws Error with the install command when no binary is found.
 */
export function findNatsServerBinary(
  env: NodeJS.ProcessEnv = process.env,
  fallbacks: readonly string[] = FALLBACK_NATS_SERVER_BINARIES,
): string {
  const explicit = env.NATS_SERVER_BIN;
  if (explicit !== undefined && explicit !== "") {
    if (isExecutableFile(explicit)) return explicit;
    throw new Error(`nats-server not found: NATS_SERVER_BIN=${explicit} is not an executable file; ${INSTALL_HINT}`);
  }
  for (const dir of (env.PATH ?? "").split(delimiter)) {
    if (dir !== "" && isExecutableFile(join(dir, "nats-server"))) return join(dir, "nats-server");
  }
  for (const candidate of fallbacks) {
    if (isExecutableFile(candidate)) return candidate;
  }
  const where = ["PATH", ...fallbacks].join(", ");
  throw new Error(`nats-server not found (looked in ${where}) for nats.servers: embedded; ${INSTALL_HINT}`);
}

function readPidFile(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, "utf8").trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether `pid` is a nats-server still using `storeDir`. nats-server 2.9 does not lock its store,
 * and two servers on one store corrupt it, so the pid file it writes there is checked. On Linux the
 * command line is compared too, so a pid recycled by an unrelated process is not mistaken for one.
 */
function isServerOn(pid: number, storeDir: string): boolean {
  if (!isAlive(pid)) return false;
  // Without /proc (macOS), a live pid is all there is to go on.
  if (!existsSync("/proc/self/cmdline")) return true;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return cmdline.some((arg, i) => arg === storeDir && cmdline[i - 1] === "-sd");
  } catch {
    // /proc hidden from us (hidepid): assume the worst rather than share the store.
    return true;
  }
}

/** Creates the store dir and refuses to share it with a live server. Returns the pid file's path. */
function prepareStoreDir(storeDir: string): string {
  try {
    mkdirSync(storeDir, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new Error(`cannot create the embedded nats-server's store dir ${storeDir} (${code})`, { cause: err });
  }
  const pidFile = join(storeDir, PID_FILE);
  const previous = readPidFile(pidFile);
  if (previous !== undefined && isServerOn(previous, storeDir)) {
    throw new Error(
      `another nats-server (pid ${previous}) is still running on the store dir ${storeDir}, perhaps left from an earlier ` +
        `slowlane; two servers on one store corrupt it: stop it (kill ${previous}) or use another store dir`,
    );
  }
  rmSync(pidFile, { force: true });
  return pidFile;
}

/** nats-server's log line: `[PID] [LEVEL] message`, with a timestamp unless `--logtime=false`. */
const LOG_LINE = /^\[\d+\] (?:\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d\.\d+ )?\[(TRC|DBG|INF|WRN|ERR|FTL)\] ?(.*)$/;

/** Sends one line to pino: debug for the server's chatter, warn/error for [WRN], [ERR] and [FTL]. */
function logLine(log: Logger, line: string): void {
  const match = LOG_LINE.exec(line);
  if (match === null) {
    // Not in the log format: a panic, or the usage text after a bad flag.
    if (line.trim() !== "") log.warn(line);
    return;
  }
  const [, level, message = ""] = match;
  if (level === "WRN") log.warn(message);
  else if (level === "ERR" || level === "FTL") log.error(message);
  else log.debug(message);
}

/** One spawned supervisor and its server. */
interface Supervised {
  child: ChildProcess;
  /** Resolves on the supervisor's exit. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once its output has ended too (never rejects). */
  outputEnded: Promise<void>;
  hasExited(): boolean;
  /** The last {@link KEPT_LINES} lines of output. */
  lastLines(): string[];
  /** Sends `signal` to the supervisor's process group: the supervisor, its watcher and the server. */
  killGroup(signal: NodeJS.Signals): void;
}

function spawnSupervised(binary: string, args: string[], env: NodeJS.ProcessEnv, graceMs: number, log: Logger): Supervised {
  const graceSeconds = String(Math.max(1, Math.ceil(graceMs / 1000)));
  // detached: its own process group, so a Ctrl-C meant for slowlane does not stop the server while
  // slowlane is still draining; slowlane stops it after that, and SIGKILL can reach the whole group.
  const child = spawn("/bin/sh", ["-c", SUPERVISOR_SCRIPT, "slowlane-nats-supervisor", graceSeconds, binary, ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env,
    detached: true,
  });
  // Writing or ending the pipe after the supervisor died gives EPIPE: nothing to do about it.
  child.stdin?.on("error", () => undefined);
  const lines: string[] = [];
  const ended: Promise<void>[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    const reader = createInterface({ input: stream, crlfDelay: Infinity });
    reader.on("line", (line) => {
      lines.push(line);
      if (lines.length > KEPT_LINES) lines.shift();
      logLine(log, line);
    });
    ended.push(new Promise((done) => reader.once("close", done)));
  }
  let exited = false;
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => {
    child.once("exit", (code, signal) => {
      exited = true;
      // A supervisor killed by a signal (SIGKILL, the OOM killer) left the server behind, but still
      // in its process group: stop it there. After a normal exit the server is already gone.
      if (signal !== null && child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGTERM");
        } catch {
          // Nothing left in the group.
        }
      }
      done({ code, signal });
    });
    // A failed spawn (no /bin/sh) emits 'error' and no 'exit'.
    child.once("error", () => {
      exited = true;
      done({ code: null, signal: null });
    });
  });
  return {
    child,
    exit,
    outputEnded: Promise.all(ended).then(() => undefined),
    hasExited: () => exited,
    lastLines: () => [...lines],
    killGroup(signal) {
      if (exited || child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        // The group is gone already.
      }
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}

/** True if GET `path` on the monitoring port answers 200. No keep-alive, so no handle lingers. */
function isHealthy(monitorPort: number, path: string): Promise<boolean> {
  return new Promise((done) => {
    const req = request({ host: HOST, port: monitorPort, path, agent: false, timeout: 1_000 }, (res) => {
      res.resume();
      done(res.statusCode === 200);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => done(false));
    req.end();
  });
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

function describeOutput(lines: string[], storeDir: string): string {
  const hint = lines.some((l) => /lock/i.test(l) && /\[(ERR|FTL)\]/.test(l))
    ? `\n(the store dir ${storeDir} seems to be in use by another nats-server)`
    : "";
  return lines.length > 0 ? `; its last output:\n${lines.join("\n")}${hint}` : hint;
}

/** Polls `/healthz?js-enabled-only=true` until it answers 200; rejects, with the server's last lines, if it exits or the deadline passes. */
async function waitUntilReady(server: Supervised, monitorPort: number, timeoutMs: number, storeDir: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (server.hasExited()) {
      const { code, signal } = await server.exit;
      // Let the last lines (the [FTL] one) arrive before quoting them.
      await Promise.race([server.outputEnded, delay(500)]);
      const lines = server.lastLines();
      const how = signal ? `was killed by ${signal}` : `exited with code ${code ?? "?"}`;
      throw new StartError(`the embedded nats-server ${how} before it was ready${describeOutput(lines, storeDir)}`, lines.some((l) => l.includes("address already in use")));
    }
    if (await isHealthy(monitorPort, "/healthz?js-enabled-only=true")) return;
    if (Date.now() >= deadline) {
      server.killGroup("SIGKILL");
      await server.exit;
      throw new StartError(
        `the embedded nats-server was not ready with JetStream within ${timeoutMs} ms${describeOutput(server.lastLines(), storeDir)}`,
        false,
      );
    }
    await Promise.race([delay(POLL_INTERVAL_MS), server.exit]);
  }
}

/** Spawns the supervised server on fresh free ports, retrying when a port was taken meanwhile. */
async function launch(binary: string, storeDir: string, pidFile: string, options: EmbeddedNatsOptions, log: Logger): Promise<{ server: Supervised; port: number; monitorPort: number }> {
  const timeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const graceMs = options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
  for (let attempt = 1; ; attempt++) {
    const port = await getFreePort();
    const monitorPort = await getFreePort();
    // Timestamps off: pino stamps each line already.
    const args = ["-a", HOST, "-p", String(port), "-m", String(monitorPort), "-js", "-sd", storeDir, "-P", pidFile, "--logtime=false"];
    const server = spawnSupervised(binary, args, options.env ?? process.env, graceMs, log);
    try {
      await waitUntilReady(server, monitorPort, timeoutMs, storeDir);
      return { server, port, monitorPort };
    } catch (err) {
      server.killGroup("SIGKILL");
      await server.exit;
      if (!(err instanceof StartError && err.addressInUse && attempt < MAX_START_ATTEMPTS)) throw err;
    }
  }
}

/**
 * Starts nats-server with JetStream on a free loopback port, its file store under `storeDir`, and
 * resolves once JetStream is ready (`/healthz?js-enabled-only=true` on a second loopback port).
 *
 * The server is stopped when `close()` is called and when this process ends for any reason
 * (including SIGKILL). An unexpected exit is logged at error and resolves `exited`.
 *
 * @throws Error with the install command when the binary is missing; when another live
 *   nats-server uses `storeDir`; or, with the server's last lines, when it exits or is not ready
 *   within `startTimeoutMs`.
 */
export async function startEmbeddedNats(options: EmbeddedNatsOptions): Promise<EmbeddedNats> {
  const binary = options.binary ?? findNatsServerBinary(options.env ?? process.env);
  if (options.binary !== undefined && !isExecutableFile(binary)) {
    throw new Error(`nats-server not found: ${binary} is not an executable file; ${INSTALL_HINT}`);
  }
  const storeDir = resolve(options.storeDir);
  const log = options.log.child({ component: "nats-server" });
  const pidFile = prepareStoreDir(storeDir);
  const { server, port, monitorPort } = await launch(binary, storeDir, pidFile, options, log);
  const pid = readPidFile(pidFile);
  if (pid === undefined) {
    server.killGroup("SIGKILL");
    throw new Error(`the embedded nats-server did not write its pid file ${pidFile}`);
  }
  const graceMs = options.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
  let closing: Promise<void> | undefined;
  const exited = server.exit.then(({ code, signal }): EmbeddedNatsExit => {
    const expected = closing !== undefined;
    if (!expected) {
      const how = signal ? `its supervisor was killed by ${signal}` : `code ${code ?? "?"}`;
      log.error({ code, signal }, `the embedded nats-server exited unexpectedly (${how}); JetStream is unavailable until slowlane restarts`);
    }
    return { code, signal, expected };
  });
  log.info({ url: `nats://${HOST}:${port}`, pid, storeDir }, "embedded nats-server ready");
  return {
    url: `nats://${HOST}:${port}`,
    pid,
    monitorUrl: `http://${HOST}:${monitorPort}`,
    storeDir,
    exited,
    close() {
      closing ??= (async () => {
        if (server.hasExited()) return;
        // EOF on the pipe: the same path as slowlane dying, so it is the one always exercised.
        server.child.stdin?.end();
        // Should the supervisor itself hang, SIGKILL the whole group (server included).
        const backstop = setTimeout(() => server.killGroup("SIGKILL"), graceMs + 2_000);
        await server.exit;
        clearTimeout(backstop);
        // The last lines ("Server Exiting..") are logged before close() resolves.
        await Promise.race([server.outputEnded, delay(1_000)]);
      })();
      return closing;
    },
  };
}
