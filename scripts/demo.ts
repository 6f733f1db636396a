/**
 * `npm run demo`: a private nats-server, the slow example backend and slowlane in front of them,
 * plus a short guide of curl commands to try. Ctrl-C stops everything and removes temp files.
 *
 * Run with tsx (`npm run demo` builds first); slowlane itself is started as a child process
 * from `dist/cli.js`, exactly as a user would run it. Set `DEMO_PORT` to listen elsewhere than 8080.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import type { Server } from "node:http";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startNatsServer } from "./nats-server.js";
import type { NatsServer } from "./nats-server.js";
import { createSlowBackend } from "./slow-backend.js";

const HOST = "127.0.0.1";
const DEFAULT_DEMO_PORT = 8080;
const READY_TIMEOUT_MS = 20_000;
const POLL_INTERVAL_MS = 100;
/** How long slowlane gets to drain after SIGTERM before it is killed. */
const CHILD_STOP_GRACE_MS = 10_000;
const CLI_PATH = fileURLToPath(new URL("../dist/cli.js", import.meta.url));

/** Everything the demo started, filled in as startup progresses, so cleanup can undo any prefix of it. */
interface Resources {
  nats?: NatsServer;
  backend?: Server;
  child?: ChildProcess;
  configDir?: string;
}

function parseDemoPort(raw: string | undefined): number {
  if (raw === undefined || raw === "") return DEFAULT_DEMO_PORT;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new Error(`DEMO_PORT=${raw} is not a TCP port (use a number from 1 to 65535)`);
  }
  return port;
}

/** Fails early with a clear message instead of letting slowlane die on EADDRINUSE (or, worse, polling someone else). */
function assertPortFree(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", (err: NodeJS.ErrnoException) => {
      reject(
        err.code === "EADDRINUSE"
          ? new Error(`port ${port} is already in use; set DEMO_PORT to another port`)
          : err,
      );
    });
    probe.listen(port, HOST, () => probe.close(() => resolve()));
  });
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, HOST, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function toYaml(opts: { demoPort: number; backendPort: number; natsUrl: string }): string {
  const q = (s: string): string => JSON.stringify(s);
  return [
    "# Written by `npm run demo`; removed when the demo stops.",
    `listen: ${q(`${HOST}:${opts.demoPort}`)}`,
    `upstream: ${q(`http://${HOST}:${opts.backendPort}`)}`,
    `nats: { servers: ${q(opts.natsUrl)}, stream: DEMO }`,
    "jobs: { path: /_slowlane/jobs }",
    "defaults: { timeout: 2m, ttl: 1h, attempts: 3, concurrency: 4, retryAfter: 1s }",
    "routes:",
    '  - { name: reports, methods: [POST], path: "/reports/**" }',
    '  - { name: exports, methods: [GET], path: "/exports/*", concurrency: 2 }',
    "",
  ].join("\n");
}

/** Resolves true if GET `url` answers 200. No keep-alive, so nothing lingers after shutdown. */
function answers200(port: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: HOST, port, path, agent: false, timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolve(false));
    req.end();
  });
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** The exit status a shell would report: the code, or 128 + the signal number. */
function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return signal ? 128 + (constants.signals[signal] ?? 0) : 1;
}

function guide(port: number, backendPort: number, nats: NatsServer, configFile: string): string {
  const base = `localhost:${port}`;
  return `
slowlane demo is running
  proxy    http://${HOST}:${port}   (config ${configFile})
  backend  http://${HOST}:${backendPort}   (slow: POST /reports/:name?delay=ms, GET /exports/:id)
  nats     ${nats.url}   (private; JetStream store ${nats.storeDir})

Try it (<id> is the last segment of the Location header):
  # a slow route: 202 Accepted at once, with a Location to poll
  curl -i -X POST ${base}/reports/q3 -d '{"x":1}'
  # the job: 202 while it runs (about 5 s), then 303 See Other to its result
  curl -i ${base}/_slowlane/jobs/<id>
  # follow the redirect to get the backend's own answer (201 and its JSON)
  curl -L ${base}/_slowlane/jobs/<id>
  # any other route passes straight through
  curl -i ${base}/hello

Ctrl-C stops slowlane, the backend and nats-server.
`;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (!isRunning(child)) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const grace = setTimeout(() => child.kill("SIGKILL"), CHILD_STOP_GRACE_MS);
  await exited;
  clearTimeout(grace);
}

function closeBackend(backend: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!backend.listening) return resolve();
    backend.close(() => resolve());
    // Slow requests may still be waiting; don't wait minutes for them.
    backend.closeAllConnections();
  });
}

/** Undoes startup in reverse order; every step runs even if an earlier one failed. */
async function cleanup(r: Resources): Promise<void> {
  const { child, backend, nats, configDir } = r;
  const steps: Array<[string, () => Promise<void>]> = [];
  if (child) steps.push(["slowlane", () => stopChild(child)]);
  if (backend) steps.push(["the backend", () => closeBackend(backend)]);
  if (nats) steps.push(["nats-server", () => nats.close()]);
  if (configDir) steps.push(["the config dir", () => rm(configDir, { recursive: true, force: true })]);
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (err) {
      console.error(`demo: could not clean up ${name}:`, err);
    }
  }
}

async function main(): Promise<void> {
  const resources: Resources = {};
  let stopping = false;
  let finished: Promise<void> | undefined;
  let startup: Promise<void> = Promise.resolve();

  /** Stops everything once, after startup has reached a consistent point, and sets the exit code. */
  const finish = (code: number): Promise<void> => {
    stopping = true;
    finished ??= (async () => {
      await startup;
      await cleanup(resources);
      process.exitCode = code;
    })();
    return finished;
  };

  process.once("SIGINT", () => void finish(0));
  process.once("SIGTERM", () => void finish(0));

  const start = async (): Promise<void> => {
    const demoPort = parseDemoPort(process.env.DEMO_PORT);
    if (!existsSync(CLI_PATH)) {
      throw new Error(`${CLI_PATH} not found; build first: npm run build`);
    }
    await assertPortFree(demoPort);
    if (stopping) return;

    resources.nats = await startNatsServer();
    if (stopping) return;

    resources.backend = createSlowBackend();
    const backendPort = await listen(resources.backend);
    if (stopping) return;

    resources.configDir = await mkdtemp(join(tmpdir(), "slowlane-demo-"));
    const configFile = join(resources.configDir, "slowlane.yaml");
    await writeFile(configFile, toYaml({ demoPort, backendPort, natsUrl: resources.nats.url }));
    if (stopping) return;

    const child = spawn(process.execPath, [CLI_PATH, "run", "--config", configFile], {
      env: { ...process.env, LOG_LEVEL: "info" },
      stdio: ["ignore", "inherit", "inherit"],
    });
    resources.child = child;
    child.once("exit", (code, signal) => {
      if (stopping) return;
      console.error(`demo: slowlane exited by itself (${signal ?? `code ${code}`}); stopping`);
      void finish(exitStatus(code, signal));
    });

    // /health is not a slow route: it passes through to the backend, so 200 means the whole chain is up.
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await answers200(demoPort, "/health"))) {
      if (stopping || !isRunning(child)) return;
      if (Date.now() >= deadline) {
        throw new Error(`slowlane did not answer on http://${HOST}:${demoPort}/health within ${READY_TIMEOUT_MS / 1000} s`);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    }
    if (stopping) return;
    console.log(guide(demoPort, backendPort, resources.nats, configFile));
  };

  startup = start().catch((err: unknown) => {
    console.error(`demo: ${err instanceof Error ? err.message : String(err)}`);
    // Not awaited here: finish() waits for `startup`, which is this very promise.
    void finish(1);
  });
  await startup;
}

await main();
