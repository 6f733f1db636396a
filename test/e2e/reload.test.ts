/**
 * Config hot reload on the built CLI: edits to the file take effect without a restart, a bad edit
 * is refused while the last good config keeps working, a Kubernetes ConfigMap update (the `..data`
 * symlink replaced by a rename) is seen, and SIGHUP reloads. Needs `npm run build` first.
 */
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import request from "supertest";
import { afterEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { useNatsAndBackend } from "../helpers/environment.js";
import { spawnSlowlane, uniqueStream, waitForLog, writeConfigFile } from "../helpers/slowlane.js";
import type { ChildSlowlane, LogLine } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const children: ChildSlowlane[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.kill("SIGKILL")));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function configDoc(stream: string, routes: Record<string, unknown>[]): Record<string, unknown> {
  return {
    listen: "127.0.0.1:0",
    admin: { listen: "127.0.0.1:0" },
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "2s" },
    defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    routes,
  };
}

const WORK = { name: "work", methods: ["POST"], path: "/slow" };
const ECHO = { name: "echo", methods: ["POST"], path: "/echo/**" };

interface Started {
  proc: ChildSlowlane;
  url: string;
  admin: string;
}

async function start(file: string): Promise<Started> {
  const proc = spawnSlowlane("run", file);
  children.push(proc);
  const listening = await waitForLog(proc.logs, "proxy listening");
  const admin = await waitForLog(proc.logs, "admin listening");
  await waitForLog(proc.logs, "forwarder started");
  return { proc, url: listening.url as string, admin: admin.url as string };
}

/** Waits for the `n`th log line with this message (1-based). */
async function waitForNth(logs: LogLine[], msg: string, n: number): Promise<LogLine> {
  return waitFor(() => logs.filter((l) => l.msg === msg)[n - 1], { timeoutMs: 20_000, what: `log line "${msg}" #${n}` });
}

/** Submits a job and waits until it is finished; the job went through the route's consumer and a worker. */
async function runJob(url: string, path: string): Promise<void> {
  const accepted = await request(url).post(path).send("x");
  expect(accepted.status).toBe(202);
  const statusUrl = accepted.headers.location as string;
  await waitFor(async () => (await request(url).get(statusUrl).redirects(0)).status === 303, { what: `job on ${path}` });
}

async function reloadsCounted(admin: string, result: "success" | "failure"): Promise<number> {
  const text = (await request(admin).get("/metrics")).text;
  const line = text.split("\n").find((l) => l.startsWith(`slowlane_config_reloads_total{result="${result}"}`));
  return Number(line?.split(" ")[1] ?? Number.NaN);
}

describe("reloading a config file edited in place", () => {
  it("applies a new route, refuses a bad edit, and reloads on SIGHUP", async () => {
    const stream = uniqueStream("reload");
    const file = writeConfigFile(configDoc(stream, [WORK]));
    const { proc, url, admin } = await start(file);

    // Before: /echo/** is passed through.
    const before = await request(url).post("/echo/a?tag=before").send("x");
    expect(before.status).toBe(200);

    // A new async route, written in place: it takes effect without a restart, worked by this process' workers.
    writeFileSync(file, stringify(configDoc(stream, [WORK, ECHO])));
    const reloaded = await waitForLog(proc.logs, "config reloaded");
    expect(reloaded).toMatchObject({ routes: ["work", "echo"], routesAdded: ["echo"] });
    await runJob(url, "/echo/a?tag=after");
    expect(await reloadsCounted(admin, "success")).toBe(1);

    // A bad edit is refused, with every problem placed; the last good config keeps working.
    writeFileSync(
      file,
      stringify(configDoc(stream, [WORK, { ...ECHO, timeout: "ten minutes" }, { name: "other", path: "nope" }])),
    );
    const refused = await waitForLog(proc.logs, "config reload refused");
    expect(refused.level).toBe(50);
    const problems = refused.problems as string[];
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/slowlane\.yaml:\d+:\d+ routes\[1\]\.timeout: "ten minutes" is not a duration/);
    expect(problems[1]).toMatch(/slowlane\.yaml:\d+:\d+ routes\[2\]\.path: "nope" must start with "\/"/);
    expect(await reloadsCounted(admin, "failure")).toBe(1);
    expect((await request(admin).get("/readyz")).status).toBe(200);
    await runJob(url, "/slow?ms=10&tag=after-refused");
    await runJob(url, "/echo/b?tag=after-refused");

    // SIGHUP reads the file again: still the bad one, refused again, nothing changes.
    proc.child.kill("SIGHUP");
    await waitForLog(proc.logs, "reloading the config");
    await waitForNth(proc.logs, "config reload refused", 2);
    expect(await reloadsCounted(admin, "failure")).toBe(2);

    // Fixed, and a key that needs a restart changed too: the rest applies, the key is named.
    writeFileSync(file, stringify({ ...configDoc(stream, [WORK]), listen: "127.0.0.1:1" }));
    const warning = await waitForLog(proc.logs, "config change needs a restart");
    expect(warning).toMatchObject({ keys: ["listen"] });
    const second = await waitForNth(proc.logs, "config reloaded", 2);
    expect(second).toMatchObject({ routes: ["work"], routesRemoved: ["echo"] });
    expect((await request(url).post("/echo/c?tag=removed").send("x")).status).toBe(200);
    expect(await reloadsCounted(admin, "success")).toBe(2);

    // SIGHUP with nothing changed: a reload that changes nothing.
    proc.child.kill("SIGHUP");
    await waitForLog(proc.logs, "config reloaded: nothing to change");
    expect(await reloadsCounted(admin, "success")).toBe(3);
    expect(proc.child.exitCode).toBeNull();
  });
});

describe("reloading a Kubernetes ConfigMap volume", () => {
  it("sees the ..data symlink replaced by a rename", async () => {
    // The layout kubelet writes: slowlane.yaml → ..data/slowlane.yaml, ..data → ..<timestamp>/
    const dir = mkdtempSync(join(tmpdir(), "slowlane-configmap-"));
    dirs.push(dir);
    const stream = uniqueStream("configmap");
    const writeVersion = (name: string, doc: Record<string, unknown>): void => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, "slowlane.yaml"), stringify(doc));
    };
    writeVersion("..2026_01_01_00_00_00.000000001", configDoc(stream, [WORK]));
    symlinkSync("..2026_01_01_00_00_00.000000001", join(dir, "..data"));
    symlinkSync(join("..data", "slowlane.yaml"), join(dir, "slowlane.yaml"));
    const file = join(dir, "slowlane.yaml");
    const { proc, url } = await start(file);
    expect((await request(url).post("/echo/a?tag=configmap-before").send("x")).status).toBe(200);

    // The update: a new timestamped dir, a new symlink ..data_tmp, renamed over ..data, the old dir removed.
    writeVersion("..2026_01_01_00_01_00.000000002", configDoc(stream, [WORK, ECHO]));
    symlinkSync("..2026_01_01_00_01_00.000000002", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    rmSync(join(dir, "..2026_01_01_00_00_00.000000001"), { recursive: true });

    await waitForLog(proc.logs, "config reloaded");
    await runJob(url, "/echo/a?tag=configmap-after");

    // And the next update too: the watch did not stay on the first file.
    writeVersion("..2026_01_01_00_02_00.000000003", configDoc(stream, [WORK]));
    symlinkSync("..2026_01_01_00_02_00.000000003", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    rmSync(join(dir, "..2026_01_01_00_01_00.000000002"), { recursive: true });
    const second = await waitForNth(proc.logs, "config reloaded", 2);
    expect(second).toMatchObject({ routesRemoved: ["echo"] });
    expect((await request(url).post("/echo/b?tag=configmap-removed").send("x")).status).toBe(200);
  });
});
