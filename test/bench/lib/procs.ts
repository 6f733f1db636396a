/**
 * Child processes of the benchmark: baseline scripts (run with tsx), slowlane from the built CLI
 * (`node dist/cli.js <role> --config FILE`, optionally under `--cpu-prof`), their readiness and
 * their memory. Every child is tracked and killed when the harness exits.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, closeSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(ROOT, "dist/cli.js");
const BASELINES = join(ROOT, "test/bench/baselines");
export const WORK_DIR = mkdtempSync(join(tmpdir(), "slowlane-bench-"));

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Everything the process wrote to stdout and stderr so far (kept in a file). */
  output(): string;
  /** Lines of stdout seen so far, in order (only when `captureLines`). */
  readonly lines: string[];
  readonly exited: Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once exited. */
  stop(graceMs?: number): Promise<void>;
}

let counter = 0;

/**
 * CPU time (user + system) a process has used so far, in ms, from `/proc/<pid>/stat` (Linux;
 * `NaN` elsewhere). Unlike req/s, CPU per request barely moves when other work shares the machine.
 */
export function cpuTimeMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    // USER_HZ is 100 on every Linux Node supports.
    return ticks * 10;
  } catch {
    return Number.NaN;
  }
}

function track(name: string, child: ChildProcess, logFile: string, lines: string[]): Proc {
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  void exited.then(() => live.delete(child));
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  let hasExited = false;
  void exited.then(() => (hasExited = true));
  return {
    name,
    child,
    pid: child.pid,
    lines,
    exited,
    output: () => readFileSync(logFile, "utf8"),
    async stop(graceMs = 30_000) {
      if (hasExited) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Spawns a process with stdout and stderr going to a log file (so a chatty child never waits on
 * the harness); with `captureLines`, stdout is piped and kept as lines instead.
 */
function spawnLogged(name: string, command: string, args: string[], env: NodeJS.ProcessEnv, captureLines: boolean): Proc {
  const logFile = join(WORK_DIR, `${name}-${++counter}.log`);
  const fd = openSync(logFile, "a");
  const lines: string[] = [];
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", captureLines ? "pipe" : fd, fd],
  });
  closeSync(fd);
  if (captureLines) {
    let pending = "";
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf("\n")) !== -1) {
        lines.push(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    });
  }
  return track(name, child, logFile, lines);
}

async function waitUntil<T>(what: string, proc: Proc, check: () => T | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void proc.exited.then(() => (exited = true));
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (exited) throw new Error(`${proc.name} exited before ${what}:\n${proc.output().slice(-4000)}`);
    if (Date.now() > deadline) throw new Error(`${proc.name}: no ${what} within ${timeoutMs} ms:\n${proc.output().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Starts `test/bench/baselines/<script>.ts` and waits for `LISTENING <port>` or `READY`; under
 * `--cpu-prof` when `profileDir` is set.
 */
export async function startBaseline(
  script: string,
  env: NodeJS.ProcessEnv = {},
  profileDir?: string,
): Promise<Proc & { url: string | undefined }> {
  const nodeArgs: string[] = [];
  if (profileDir) {
    mkdirSync(profileDir, { recursive: true });
    nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${profileDir}`);
  }
  const proc = spawnLogged(script, process.execPath, [...nodeArgs, "--import", "tsx", join(BASELINES, `${script}.ts`)], env, true);
  const port = await waitUntil("LISTENING or READY line", proc, () => {
    for (const line of proc.lines) {
      if (line.startsWith("LISTENING ")) return line.slice("LISTENING ".length);
      if (line === "READY") return "";
    }
    return undefined;
  });
  return Object.assign(proc, { url: port === "" ? undefined : `http://127.0.0.1:${port}` });
}

/** Writes a slowlane config (YAML) to the bench's work dir. */
export function writeConfig(doc: Record<string, unknown>): string {
  const file = join(WORK_DIR, `slowlane-${++counter}.yaml`);
  writeFileSync(file, stringify(doc));
  return file;
}

export interface SlowlaneProc extends Proc {
  /** `http://host:port` of a proxy (`run`/`proxy`); undefined for a worker. */
  readonly url: string | undefined;
}

/** Options for {@link startSlowlane}. */
export interface SlowlaneStart {
  /** Directory for `--cpu-prof` output; no profiling when undefined. */
  profileDir?: string | undefined;
  /** Wait for this log message instead of the role's default. */
  readyMsg?: string;
  /** More environment variables for slowlane (the tracing scenario's OTEL_*). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs `node dist/cli.js <role> --config FILE` (LOG_LEVEL=info, the production default, logs to a
 * file) and waits for "proxy listening" (run, proxy) and "forwarder started" (run, worker).
 */
export async function startSlowlane(role: "run" | "proxy" | "worker", config: string, opts: SlowlaneStart = {}): Promise<SlowlaneProc> {
  // BENCH_NODE_ARGS: extra node flags for slowlane (e.g. --trace-gc, --max-old-space-size=N).
  const nodeArgs: string[] = (process.env.BENCH_NODE_ARGS ?? "").split(" ").filter(Boolean);
  if (opts.profileDir) {
    mkdirSync(opts.profileDir, { recursive: true });
    nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${opts.profileDir}`);
  }
  const proc = spawnLogged(`slowlane-${role}`, process.execPath, [...nodeArgs, CLI, role, "--config", config], { LOG_LEVEL: "info", ...opts.env }, false);
  const parsed = (): Record<string, unknown>[] =>
    proc
      .output()
      .split("\n")
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
  const wanted = opts.readyMsg ? [opts.readyMsg] : role === "worker" ? ["forwarder started"] : role === "proxy" ? ["proxy listening"] : ["proxy listening", "forwarder started"];
  const lines = await waitUntil(`log lines ${wanted.join(", ")}`, proc, () => {
    const logs = parsed();
    return wanted.every((m) => logs.some((l) => l.msg === m)) ? logs : undefined;
  });
  const listening = lines.find((l) => l.msg === "proxy listening");
  return Object.assign(proc, { url: listening ? String(listening.url) : undefined });
}

/** Resident set size of a process, from /proc (Linux), in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]) * 1024;
}
