/**
 * Starting slowlane in tests: in-process (`startApp`, logs captured as parsed pino lines) or as a
 * real child process of the built CLI (`spawnSlowlane`), for tests that kill it. A file whose tests
 * share one slowlane starts it with `useSlowlane` (use-slowlane.ts), which builds on `startApp`.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { startSlowlane } from "../../src/app.js";
import type { Role, Slowlane, SlowlaneOptions } from "../../src/app.js";
import { parseConfig } from "../../src/config/index.js";
import type { Config } from "../../src/config/index.js";
import { createLogger } from "../../src/log.js";
import { createJobsClient } from "./jobs.js";
import type { JobsClient } from "./jobs.js";
import { waitFor } from "./wait.js";

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/**
 * A writable that keeps every line written to it, parsed as JSON (pino's own tests do the same);
 * lines that are not JSON (the CLI's plain output) are kept as `{ msg: line }`.
 */
export function createLogSink(lines: LogLine[] = []): { lines: LogLine[]; stream: Writable } {
  let pending = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      pending += chunk.toString("utf8");
      let nl: number;
      while ((nl = pending.indexOf("\n")) !== -1) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (!line.trim()) continue;
        try {
          lines.push(JSON.parse(line) as LogLine);
        } catch {
          lines.push({ msg: line });
        }
      }
      done();
    },
  });
  return { lines, stream };
}

/** Tests start many slowlanes at once: the admin server gets a free port unless the test says otherwise. */
function withFreeAdminPort(doc: Record<string, unknown>): Record<string, unknown> {
  return "admin" in doc ? doc : { ...doc, admin: { listen: "127.0.0.1:0" } };
}

/** A YAML document as ops would write it, parsed by the real loader (`env`: the environment overrides it sees). */
export function makeConfig(doc: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): Config {
  return parseConfig(stringify(withFreeAdminPort(doc)), { file: "test.yaml", env });
}

/** A unique stream prefix, so tests sharing a nats-server never share state. */
export function uniqueStream(label: string): string {
  return `T${label.replace(/[^A-Za-z0-9]/g, "")}${Math.random().toString(36).slice(2, 8)}`;
}

export interface TestApp extends JobsClient {
  readonly app: Slowlane;
  /** The config it was started with. */
  readonly config: Config;
  /** `http://host:port` of the proxy; "" for a worker. */
  readonly url: string;
  /** Every log line, parsed (pino at `debug`). */
  readonly logs: LogLine[];
  close(): Promise<void>;
}

export interface StartAppOptions {
  /** Default `run` (proxy and worker in one process). */
  role?: Role;
  /** How long `close()` lets running backend calls finish; default 2 s. */
  drainMs?: number;
  /** Node HTTP server limits of the proxy (short timeouts for slow-client tests). */
  serverLimits?: SlowlaneOptions["serverLimits"];
  /** Where slowlane reads the NATS_* credentials variables; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Tracing (`startTracing`); default off. `close()` flushes it. */
  tracing?: SlowlaneOptions["tracing"];
}

/**
 * Starts slowlane in this process, logs captured. `startApp(config, "worker")` is short for
 * `startApp(config, { role: "worker" })`; a test file with one slowlane uses `useSlowlane` instead.
 */
export async function startApp(config: Config, options: Role | StartAppOptions = {}): Promise<TestApp> {
  const { role = "run", drainMs = 2_000, serverLimits, env, tracing } = typeof options === "string" ? { role: options } : options;
  const sink = createLogSink();
  const log = createLogger({ level: "debug", destination: sink.stream, redactHeaders: config.log.redactHeaders });
  const app = await startSlowlane({ config, role, log, natsRetryDelayMs: 200, drainMs, serverLimits, env, tracing });
  const url = app.url ?? "";
  return { ...createJobsClient(() => url), app, config, url, logs: sink.lines, close: () => app.close() };
}

const CLI = fileURLToPath(new URL("../../dist/cli.js", import.meta.url));

export interface ChildSlowlane {
  readonly child: ChildProcess;
  readonly logs: LogLine[];
  /** Resolves when the process has exited. */
  readonly exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Writes `config` as YAML to a temp file and runs `node dist/cli.js <role> --config file`. */
export function writeConfigFile(doc: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), "slowlane-test-"));
  const file = join(dir, "slowlane.yaml");
  writeFileSync(file, stringify(withFreeAdminPort(doc)));
  return file;
}

export function spawnSlowlane(role: Role | "check", configFile: string, env: NodeJS.ProcessEnv = {}): ChildSlowlane {
  const child = spawn(process.execPath, [CLI, role, "--config", configFile], {
    env: { ...process.env, LOG_LEVEL: "debug", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const { lines: logs, stream } = createLogSink();
  child.stdout?.pipe(stream);
  child.stderr?.on("data", (chunk: Buffer) => logs.push({ msg: chunk.toString("utf8"), stderr: true }));
  // "close", not "exit": it fires once stdout and stderr are drained, so `logs` is complete.
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return {
    child,
    logs,
    exited,
    async kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export async function waitForLog(logs: LogLine[], msg: string, timeoutMs = 20_000): Promise<LogLine> {
  return waitFor(() => logs.find((l) => l.msg === msg), { timeoutMs, what: `log line "${msg}"` });
}
