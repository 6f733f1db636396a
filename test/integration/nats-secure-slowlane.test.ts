/**
 * slowlane end to end against a NATS that needs credentials or TLS (issue 10 §4): a nats-server with
 * user/password, one with a token and one with TLS from a private CA, each reached through the
 * `nats` CLI's environment variables; and what a wrong password or an untrusted certificate does
 * (one clear line, 503 on async routes, passthrough on, not ready, never a crash), including a
 * password changed on the server while connected, fixed later in the mounted password file.
 * The CLI cases need `npm run build` first.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import request from "supertest";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestBackend } from "../helpers/backend.js";
import type { TestBackend } from "../helpers/backend.js";
import { waitFinal } from "../helpers/jobs.js";
import { startSecureNatsServer } from "../helpers/nats-secure.js";
import type { SecureMode, SecureNatsServer } from "../helpers/nats-secure.js";
import { makeConfig, spawnSlowlane, startApp, uniqueStream, waitForLog, writeConfigFile } from "../helpers/slowlane.js";
import type { ChildSlowlane, LogLine, TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const ERROR = 50;
const CLI = fileURLToPath(new URL("../../dist/cli.js", import.meta.url));

/** `node dist/cli.js …args` with `env` added to this process's, stdout and stderr apart. */
function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}
let backend: TestBackend;
let scratch: string;
const servers = new Map<SecureMode, SecureNatsServer>();
const apps: TestApp[] = [];
const children: ChildSlowlane[] = [];

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "slowlane-secure-"));
  backend = await startTestBackend();
  const started = await Promise.all((["password", "token", "tls"] as const).map((mode) => startSecureNatsServer({ mode })));
  for (const s of started) servers.set(s.mode, s);
});

afterEach(async () => {
  await Promise.all([...apps.splice(0).map((a) => a.close()), ...children.splice(0).map((c) => c.kill())]);
});

afterAll(async () => {
  await Promise.all([...servers.values()].map((s) => s.close()));
  await backend?.close();
  await rm(scratch, { recursive: true, force: true });
});

function secure(mode: SecureMode): SecureNatsServer {
  const s = servers.get(mode);
  if (s === undefined) throw new Error(`no ${mode} server`);
  return s;
}

/** The client variables of a secure server, without NATS_URL (the config names the server). */
function credentials(s: SecureNatsServer): Record<string, string> {
  const { NATS_URL: _url, ...rest } = s.env;
  return rest;
}

function configFor(url: string, label: string, nats: Record<string, unknown> = {}) {
  return makeConfig({
    listen: "127.0.0.1:0",
    upstream: backend.url,
    nats: { servers: url, stream: uniqueStream(label), ...nats },
    defaults: { timeout: "10s", attempts: 1, retryAfter: "1s" },
    routes: [{ name: "work", methods: ["POST"], path: "/work/**" }],
  });
}

async function start(config: ReturnType<typeof makeConfig>, env: Record<string, string>): Promise<TestApp> {
  const app = await startApp(config, { env });
  apps.push(app);
  return app;
}

/** Every secret value a log line must never hold. */
function secretsOf(env: Record<string, string>): string[] {
  return [env.NATS_PASSWORD, env.NATS_TOKEN].filter((v): v is string => v !== undefined && v !== "");
}

function expectNoSecret(logs: readonly LogLine[], secrets: readonly string[]): void {
  const text = JSON.stringify(logs);
  for (const secret of secrets) expect(text).not.toContain(secret);
}

/** A job through the async route, done by the backend: NATS works end to end. */
async function roundTrip(url: string, tag: string): Promise<void> {
  const accepted = await request(url).post(`/work/${tag}`).send("x");
  expect(accepted.status).toBe(202);
  const done = await waitFinal(url, accepted.body.id as string);
  expect(done.status).toBe(303);
  expect(backend.callsTo(`/work/${tag}`)).toHaveLength(1);
}

/** While NATS refuses slowlane: 503 on async routes, passthrough answers, /readyz is down. */
async function expectNatsAway(app: TestApp): Promise<void> {
  expect((await request(app.url).post("/work/refused").send("x")).status).toBe(503);
  expect((await request(app.url).get("/plain")).status).toBe(200);
  expect((await request(app.app.adminUrl).get("/readyz")).status).toBe(503);
}

const errorLines = (logs: readonly LogLine[], pattern: RegExp) => logs.filter((l) => l.level === ERROR && pattern.test(String(l.msg)));

describe.each([
  ["password", "user slowlane (password from NATS_PASSWORD)"],
  ["token", "token from NATS_TOKEN"],
  ["tls", "no authentication, TLS with CA"],
] as const)("a nats-server with %s", (mode, describes) => {
  it("works end to end through the environment variables, and logs no secret", async () => {
    const s = secure(mode);
    const app = await start(configFor(s.url, mode), credentials(s));
    await app.app.ready;
    const connected = await waitForLog(app.logs, "connected to NATS");
    expect(String(connected.auth)).toContain(describes);
    await roundTrip(app.url, `${mode}-${uniqueStream("t")}`);
    expectNoSecret(app.logs, secretsOf(s.env));
  });
});

describe("the built CLI", () => {
  it("connects with NATS_URL, NATS_USER and NATS_PASSWORD from its environment", async () => {
    const s = secure("password");
    const file = writeConfigFile({
      listen: "127.0.0.1:0",
      upstream: backend.url,
      nats: { servers: "nats://127.0.0.1:1", stream: uniqueStream("cli") },
      routes: [{ name: "work", methods: ["POST"], path: "/work/**" }],
    });
    const child = spawnSlowlane("run", file, s.env);
    children.push(child);
    const listening = await waitForLog(child.logs, "proxy listening");
    await waitForLog(child.logs, "forwarder started");
    const tag = `cli-${uniqueStream("t")}`;
    await roundTrip(String(listening.url), tag);
    expectNoSecret(child.logs, secretsOf(s.env));

    // `slowlane jobs` connects the same way.
    const list = await runCli(["jobs", "list", "--json", "--config", file], s.env);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain('"status":"completed"');
    const refused = await runCli(["jobs", "list", "--config", file], { ...s.env, NATS_PASSWORD: "not-the-password-4711" });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`slowlane jobs: cannot connect to NATS at ${s.url}: authorization violation: the server rejected user slowlane`);
    expect(refused.stderr).not.toContain("4711");
  });
});

describe("refused by NATS", () => {
  it("a wrong password: one clear line naming the server, NATS away meanwhile, no crash", async () => {
    const s = secure("password");
    const wrong = { NATS_USER: "slowlane", NATS_PASSWORD: "not-the-password-4711" };
    const app = await start(configFor(s.url, "wrong"), wrong);
    const line = await waitFor(() => errorLines(app.logs, /authorization violation/)[0], { what: "the authorization line" });
    expect(line.msg).toBe(
      `cannot connect to NATS at ${s.url}: authorization violation: the server rejected user slowlane (password from NATS_PASSWORD); ` +
        "check NATS_USER and NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY (or nats.auth in the config); " +
        "retrying every 0.2s (async routes answer 503 meanwhile)",
    );
    // It keeps trying (the same failure at debug), and says it once.
    await waitFor(() => app.logs.filter((l) => l.msg === line.msg).length >= 4, { what: "retries" });
    expect(errorLines(app.logs, /authorization violation/)).toHaveLength(1);
    await expectNatsAway(app);
    expectNoSecret(app.logs, [...secretsOf(wrong), ...secretsOf(s.env)]);
  });

  it("an untrusted certificate: one clear line, NATS away meanwhile, no crash", async () => {
    const s = secure("tls");
    const app = await start(configFor(s.url, "untrusted"), { NATS_CA: s.pki?.otherCa ?? "" });
    const line = await waitFor(() => errorLines(app.logs, /not trusted/)[0], { what: "the certificate line" });
    expect(line.msg).toMatch(new RegExp(`^cannot connect to NATS at ${s.url}: the server's TLS certificate is not trusted .*set NATS_CA`));
    await waitFor(() => app.logs.filter((l) => l.msg === line.msg).length >= 3, { what: "retries" });
    expect(errorLines(app.logs, /not trusted/)).toHaveLength(1);
    await expectNatsAway(app);
  });

  it("a password changed on the server while connected: keeps retrying, and reconnects once the mounted file has it", async () => {
    const s = await startSecureNatsServer({ mode: "password" });
    try {
      const passwordFile = join(scratch, "password");
      const old = s.env.NATS_PASSWORD as string;
      await writeFile(passwordFile, `${old}\n`);
      const app = await start(configFor(s.url, "rotate", { auth: { user: "slowlane", passwordFile } }), {});
      await app.app.ready;
      await roundTrip(app.url, `before-${uniqueStream("t")}`);

      // The server now wants another password: nats.js alone would give up after two refusals.
      const serverConfig = join(s.dir, "nats-server.conf");
      const rotated = "rotated-password-0815";
      await writeFile(serverConfig, (await readFile(serverConfig, "utf8")).replace(old, rotated));
      await s.server.restart();
      const refused = await waitFor(() => errorLines(app.logs, /authorization violation/)[0], { what: "the refusal" });
      expect(refused.msg).toContain(`cannot connect to NATS at ${s.url}: authorization violation`);
      await waitFor(() => app.logs.filter((l) => l.msg === refused.msg).length >= 4, { timeoutMs: 30_000, what: "several refusals" });
      await expectNatsAway(app);

      await writeFile(passwordFile, `${rotated}\n`);
      await waitForLog(app.logs, "NATS connection restored", 30_000);
      await waitFor(async () => (await request(app.app.adminUrl).get("/readyz")).status === 200, { what: "ready again" });
      await roundTrip(app.url, `after-${uniqueStream("t")}`);
      expectNoSecret(app.logs, [old, rotated]);
    } finally {
      await Promise.all(apps.splice(0).map((a) => a.close()));
      await s.close();
    }
  });
});
