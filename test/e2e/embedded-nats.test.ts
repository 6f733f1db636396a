/**
 * `npm start` on a machine with nothing running (issue 14 §3): the example config/slowlane.yaml
 * says `nats.servers: embedded`, so the built CLI starts its own nats-server, serves the example
 * routes, keeps the jobs across restarts (a SIGKILL included) and never leaves the server behind.
 * The config is a copy of the example with free ports and a temp store dir; its upstream stays
 * http://127.0.0.1:3000 when that port is free (a test backend listens there), else it points at
 * the test backend. `NATS_URL` still wins; a missing binary is one line with the install command.
 * Needs `npm run build` first.
 */
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { startTestBackend } from "../helpers/backend.js";
import type { TestBackend } from "../helpers/backend.js";
import { JOBS, fetchResult, waitFinal } from "../helpers/jobs.js";
import { startNatsServer } from "../helpers/nats.js";
import { spawnSlowlane, waitForLog } from "../helpers/slowlane.js";
import type { ChildSlowlane, LogLine } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const EXAMPLE = fileURLToPath(new URL("../../config/slowlane.yaml", import.meta.url));
/** The example routes' upstream. */
const EXAMPLE_BACKEND_PORT = 3000;

let scratch: string;
let backend: TestBackend;
let configFile: string;
let storeDir: string;
const children: ChildSlowlane[] = [];

/** A test backend on the example's port 3000 if it is free, else on a free port (the config copy then points there). */
async function startBackend(): Promise<{ backend: TestBackend; upstream: string | undefined }> {
  try {
    return { backend: await startTestBackend(EXAMPLE_BACKEND_PORT), upstream: undefined };
  } catch {
    const other = await startTestBackend();
    return { backend: other, upstream: other.url };
  }
}

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "slowlane-embedded-e2e-"));
  storeDir = join(scratch, "nats");
  const started = await startBackend();
  backend = started.backend;
  const doc = parse(readFileSync(EXAMPLE, "utf8")) as Record<string, unknown> & { nats: Record<string, unknown> };
  expect(doc.nats.servers, "the example runs the embedded server").toBe("embedded");
  doc.listen = "127.0.0.1:0";
  doc.admin = { listen: "127.0.0.1:0" };
  doc.nats.storeDir = storeDir;
  if (started.upstream !== undefined) doc.upstream = started.upstream;
  configFile = join(scratch, "slowlane.yaml");
  await writeFile(configFile, stringify(doc));
});

afterAll(async () => {
  await Promise.all(children.map((c) => c.kill("SIGKILL")));
  await backend?.close();
  await rm(scratch, { recursive: true, force: true });
});

/** The built CLI on the config copy; NATS_URL emptied so the caller's environment cannot replace `embedded`. */
function spawn(role: "run" | "proxy", env: NodeJS.ProcessEnv = {}): ChildSlowlane {
  const child = spawnSlowlane(role, configFile, { NATS_URL: "", ...env });
  children.push(child);
  return child;
}

/** Waits until the role is up; returns the proxy's URL and the embedded nats-server's pid. */
async function started(child: ChildSlowlane, role: "run" | "proxy"): Promise<{ url: string; natsPid: number }> {
  const listening = await waitForLog(child.logs, "proxy listening");
  await waitForLog(child.logs, role === "run" ? "forwarder started" : "connected to NATS");
  const ready = await waitForLog(child.logs, "embedded nats-server ready");
  return { url: String(listening.url), natsPid: Number(ready.pid) };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

const messages = (logs: readonly LogLine[]) => logs.map((l) => String(l.msg ?? ""));

describe("nats.servers: embedded, as in the example config", () => {
  const ids: string[] = [];

  it("starts its own nats-server and says so; a job queued before a SIGKILL is still there after it", async () => {
    const proxy = spawn("proxy");
    const { url, natsPid } = await started(proxy, "proxy");
    const line = messages(proxy.logs).find((m) => m.includes("embedded nats-server") && m.includes("production"));
    expect(line).toContain("point nats.servers at a real NATS cluster");
    // nats-server's own lines arrive through pino, tagged.
    expect(proxy.logs.some((l) => l.component === "nats-server" && l.msg === "Server is ready")).toBe(true);

    const accepted = await request(url).post("/reports/q3").send({ quarter: 3 });
    expect(accepted.status).toBe(202);
    ids.push(accepted.body.id as string);
    expect((await request(url).get(`${JOBS}/${ids[0]}`)).body.status).toBe("queued");

    proxy.child.kill("SIGKILL");
    await proxy.exited;
    await waitFor(() => !isAlive(natsPid), { what: `the embedded nats-server (pid ${natsPid}) to stop after slowlane's SIGKILL` });
  });

  it("runs the queued job after a restart, serves the example routes, and stops its server on SIGTERM", async () => {
    const run = spawn("run");
    const { url, natsPid } = await started(run, "run");
    const first = await waitFinal(url, ids[0] as string);
    expect(first.status).toBe(303);
    expect(backend.callsTo("/reports/q3")).toHaveLength(1);

    const accepted = await request(url).post("/exports/sales").send("x");
    expect(accepted.status).toBe(202);
    ids.push(accepted.body.id as string);
    expect((await waitFinal(url, ids[1] as string)).status).toBe(303);
    expect((await request(url).get("/plain")).status).toBe(200);

    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
    expect(isAlive(natsPid), "the embedded nats-server stopped with slowlane").toBe(false);
    const order = messages(run.logs);
    expect(order.indexOf("stopped")).toBeGreaterThan(order.indexOf("Server Exiting.."));
  });

  it("keeps the finished jobs and their results across another restart", async () => {
    const run = spawn("run");
    const { url } = await started(run, "run");
    for (const id of ids) {
      const status = await request(url).get(`${JOBS}/${id}`).redirects(0);
      expect(status.status).toBe(303);
      const result = await fetchResult(url, id);
      expect(result.status).toBe(200);
    }
    expect(backend.callsTo("/reports/q3")).toHaveLength(1);
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
  });
});

describe("around the embedded server", () => {
  it("NATS_URL replaces it: no embedded server is started", async () => {
    const nats = await startNatsServer();
    try {
      const run = spawn("run", { NATS_URL: nats.url });
      await waitForLog(run.logs, "forwarder started");
      const connected = await waitForLog(run.logs, "connected to NATS");
      expect(connected.servers).toBe(nats.url);
      expect(messages(run.logs).some((m) => m.includes("embedded nats-server"))).toBe(false);
      run.child.kill("SIGTERM");
      expect(await run.exited).toBe(0);
    } finally {
      await nats.close();
    }
  });

  it("a missing nats-server binary: one line with the install command, exit 1", async () => {
    const run = spawn("run", { NATS_SERVER_BIN: join(scratch, "no-such-nats-server") });
    expect(await run.exited).toBe(1);
    const fatal = run.logs.filter((l) => l.level === 60);
    expect(fatal).toHaveLength(1);
    expect(String(fatal[0]?.msg)).toMatch(/^could not start: nats-server not found: NATS_SERVER_BIN=.* is not an executable file; install it \(apt-get install -y nats-server\)/);
  });
});
