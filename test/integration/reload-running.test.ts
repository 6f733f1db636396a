/**
 * A hot reload never disturbs a call that is running (issue 11 §2): lowering `nats.ackWait` does
 * not get the job redelivered to a second call (the heartbeat follows the new AckWait), and
 * lowering `ttl` and `timeout` (hence the jobs bucket's max_age) does not let the running job's
 * record age out mid-call.
 */
import { writeFileSync } from "node:fs";
import request from "supertest";
import { afterEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { startSlowlane } from "../../src/app.js";
import type { Slowlane } from "../../src/app.js";
import { loadConfig } from "../../src/config/index.js";
import { createLogger } from "../../src/log.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { uniqueTag } from "../helpers/jobs.js";
import { createLogSink, uniqueStream, writeConfigFile } from "../helpers/slowlane.js";
import type { LogLine } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
let running: Slowlane | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
});

function configDoc(stream: string, settings: { ackWait: string; ttl: string; timeout: string }): Record<string, unknown> {
  return {
    listen: "127.0.0.1:0",
    admin: { listen: "127.0.0.1:0" },
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: settings.ackWait },
    defaults: { timeout: settings.timeout, ttl: settings.ttl, attempts: 3 },
    routes: [{ name: "slow", methods: ["POST"], path: "/slow" }],
  };
}

async function start(file: string): Promise<{ app: Slowlane; logs: LogLine[] }> {
  const sink = createLogSink();
  const log = createLogger({ level: "debug", destination: sink.stream });
  const app = await startSlowlane({ config: loadConfig(file, {}), role: "run", log, natsRetryDelayMs: 200, drainMs: 2_000, configFile: file, watchConfig: false });
  running = app;
  await app.ready;
  return { app, logs: sink.lines };
}

/** Submits a slow call, waits until the backend has it, puts `next` in force by a reload, and waits for the job to complete. */
async function reloadMidCall(file: string, app: Slowlane, logs: LogLine[], next: Record<string, unknown>): Promise<{ id: string; path: string }> {
  const path = `/slow?ms=4000&tag=${uniqueTag("reload")}`;
  const accepted = await request(app.url ?? "").post(path).send("x");
  expect(accepted.status).toBe(202);
  const id = accepted.body.id as string;
  await waitFor(() => env.backend.callsTo(path).length === 1, { what: "the call to start" });
  writeFileSync(file, stringify(next));
  const reloaded = await app.reload();
  expect(reloaded, JSON.stringify(logs.filter((l) => String(l.msg).startsWith("config reload")))).toBe(true);
  // Done when the job completes, or (before the fix) when the backend is called a second time.
  await waitFor(() => logs.some((l) => l.msg === "job completed" && l.job === id) || env.backend.callsTo(path).length > 1, {
    timeoutMs: 20_000,
    what: "the job to complete",
  });
  return { id, path };
}

describe("a reload while a call runs", () => {
  it("lowering nats.ackWait does not get the running job redelivered", { timeout: 40_000 }, async () => {
    const stream = uniqueStream("ackwait");
    const file = writeConfigFile(configDoc(stream, { ackWait: "30s", ttl: "10m", timeout: "1m" }));
    const { app, logs } = await start(file);
    const { id, path } = await reloadMidCall(file, app, logs, configDoc(stream, { ackWait: "300ms", ttl: "10m", timeout: "1m" }));
    expect(env.backend.callsTo(path)).toHaveLength(1);
    expect(logs.filter((l) => l.msg === "job started" && l.job === id)).toHaveLength(1);
    expect(logs.find((l) => l.msg === "job completed" && l.job === id)).toMatchObject({ attempt: 1 });
  });

  it("lowering ttl and timeout does not let the running job's record age out", { timeout: 40_000 }, async () => {
    const stream = uniqueStream("maxage");
    const file = writeConfigFile(configDoc(stream, { ackWait: "2s", ttl: "1h", timeout: "10m" }));
    const { app, logs } = await start(file);
    // The jobs bucket's max_age becomes 2 s (ttl + timeout) while the call needs 4 s.
    const { id, path } = await reloadMidCall(file, app, logs, configDoc(stream, { ackWait: "2s", ttl: "1s", timeout: "1s" }));
    expect(env.backend.callsTo(path)).toHaveLength(1);
    expect(logs.find((l) => l.msg === "job completed" && l.job === id)).toMatchObject({ attempt: 1 });
    // Kept fresh by touches, not rescued by writing a vanished record again.
    expect(logs.filter((l) => l.job === id && l.level !== undefined && l.level >= 40)).toEqual([]);
  });
});
