/**
 * `reload()` with a separate proxy and worker, in-process against a real nats-server: both roles
 * apply a new route, a reload while NATS is away is applied on reconnect, an invalid file is refused.
 */
import { writeFileSync } from "node:fs";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { startSlowlane } from "../../src/app.js";
import type { Role, Slowlane } from "../../src/app.js";
import { loadConfig } from "../../src/config/index.js";
import { createLogger } from "../../src/log.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { createLogSink, uniqueStream, writeConfigFile } from "../helpers/slowlane.js";
import type { LogLine } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const stream = uniqueStream("reload");
let file: string;
let proxy: { app: Slowlane; logs: LogLine[] };
let worker: { app: Slowlane; logs: LogLine[] };

function configDoc(routes: Record<string, unknown>[]): Record<string, unknown> {
  return {
    listen: "127.0.0.1:0",
    admin: { listen: "127.0.0.1:0" },
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "2s" },
    defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    routes,
  };
}

async function start(role: Role): Promise<{ app: Slowlane; logs: LogLine[] }> {
  const sink = createLogSink();
  const log = createLogger({ level: "debug", destination: sink.stream });
  // Reloads are asked for explicitly here; the file watch is the e2e test's.
  const app = await startSlowlane({
    config: loadConfig(file, {}),
    role,
    log,
    natsRetryDelayMs: 200,
    drainMs: 2_000,
    configFile: file,
    watchConfig: false,
  });
  await app.ready;
  return { app, logs: sink.lines };
}

async function runJob(path: string): Promise<void> {
  const url = proxy.app.url ?? "";
  const accepted = await request(url).post(path).send("x");
  expect(accepted.status).toBe(202);
  const statusUrl = accepted.headers.location as string;
  await waitFor(async () => (await request(url).get(statusUrl).redirects(0)).status === 303, { what: `job on ${path}` });
}

beforeAll(async () => {
  file = writeConfigFile(configDoc([{ name: "work", methods: ["POST"], path: "/slow" }]));
  [proxy, worker] = await Promise.all([start("proxy"), start("worker")]);
});

afterAll(async () => {
  await Promise.all([proxy?.app.close(), worker?.app.close()]);
});

describe("reload() on a proxy and a worker", () => {
  it("puts a new route in force in both roles", async () => {
    expect((await request(proxy.app.url ?? "").post("/echo/a?tag=reload-before").send("x")).status).toBe(200);
    writeFileSync(
      file,
      stringify(configDoc([{ name: "work", methods: ["POST"], path: "/slow" }, { name: "echo", path: "/echo/**" }])),
    );
    expect(await worker.app.reload()).toBe(true);
    expect(await proxy.app.reload()).toBe(true);
    await runJob("/echo/a?tag=reload-after");
    expect(worker.logs.find((l) => l.msg === "config reloaded")).toMatchObject({ routesAdded: ["echo"] });
  });

  it("refuses an invalid file and keeps the config in force", async () => {
    writeFileSync(file, "routes:\n  - name: broken\n    path: /x\n    attempts: 0\n");
    expect(await proxy.app.reload()).toBe(false);
    expect(await worker.app.reload()).toBe(false);
    expect(proxy.logs.find((l) => l.msg === "config reload refused")?.problems).toEqual([
      expect.stringMatching(/:4:15 routes\[0\]\.attempts: /),
    ]);
    await runJob("/echo/b?tag=reload-refused");
  });

  it("applies a reload made while NATS is away once it is back", async () => {
    await env.nats.stop();
    await waitFor(async () => (await request(worker.app.adminUrl).get("/readyz")).status === 503, {
      what: "the worker to see NATS gone",
    });
    writeFileSync(
      file,
      stringify(
        configDoc([
          { name: "work", methods: ["POST"], path: "/slow" },
          { name: "echo", path: "/echo/**" },
          { name: "late", methods: ["POST"], path: "/late/*" },
        ]),
      ),
    );
    expect(await proxy.app.reload()).toBe(true);
    expect(await worker.app.reload()).toBe(true);

    await env.nats.restart();
    await waitFor(async () => (await request(worker.app.adminUrl).get("/readyz")).status === 200, {
      timeoutMs: 30_000,
      what: "the worker to be ready again",
    });
    await waitFor(async () => (await request(proxy.app.adminUrl).get("/readyz")).status === 200, {
      timeoutMs: 30_000,
      what: "the proxy to be ready again",
    });
    // The reconnect's provisioning used the reloaded config: the new route's consumer exists and is pulled from.
    await runJob("/late/x?tag=reload-late");
  });
});
