/**
 * Forwarder workers as real processes (the built CLI): a worker SIGKILLed mid-call, route
 * concurrency across two workers, and a call longer than AckWait that must not run twice.
 * Needs `npm run build` first (npm test does it).
 */
import { afterEach, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { makeConfig, spawnSlowlane, startApp, uniqueStream, waitForLog, writeConfigFile } from "../helpers/slowlane.js";
import type { ChildSlowlane, TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const children: ChildSlowlane[] = [];
const apps: TestApp[] = [];

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.kill("SIGKILL")));
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

/** A proxy in this process and `workers` worker processes, all on one fresh stream. */
async function cluster(workers: number, route: Record<string, unknown>) {
  const doc = {
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream: uniqueStream("e2e"), ackWait: "1s" },
    defaults: { timeout: "30s", ttl: "5m", attempts: 3, retryAfter: "1s" },
    routes: [{ name: "work", methods: ["POST"], path: "/slow", ...route }],
  };
  const proxy = await startApp(makeConfig(doc), "proxy");
  apps.push(proxy);
  await proxy.app.ready;
  const file = writeConfigFile(doc);
  const spawned = Array.from({ length: workers }, () => spawnSlowlane("worker", file));
  children.push(...spawned);
  await Promise.all(spawned.map((w) => waitForLog(w.logs, "forwarder started")));
  return { proxy, workers: spawned };
}

/** Waits until the job is final, which must be completed. */
async function waitCompleted(proxy: TestApp, id: string, timeoutMs = 30_000) {
  const res = await proxy.waitFinal(id, timeoutMs);
  expect(res.body.status).toBe("completed");
  return res;
}

describe("forwarder workers", () => {
  it("a worker SIGKILLed mid-call: another worker runs the job to completion", async () => {
    const { proxy, workers } = await cluster(2, { concurrency: 4 });
    const id = await proxy.submit("post", "/slow?ms=2500&tag=crash", { body: "crash" });
    const victim = await waitFor(() => workers.find((w) => w.logs.some((l) => l.msg === "job started" && l.job === id)));
    await waitFor(() => env.backend.callsTo("/slow?ms=2500&tag=crash").length === 1);
    victim.child.kill("SIGKILL");
    await victim.exited;

    const done = await waitCompleted(proxy, id);
    expect(done.body.attempts).toBe(2);
    expect(env.backend.callsTo("/slow?ms=2500&tag=crash")).toHaveLength(2);
    const survivor = workers.find((w) => w !== victim);
    // The completion line is written just after the record, so it may trail the status by a moment.
    await waitFor(() => survivor?.logs.some((l) => l.msg === "job completed" && l.job === id), {
      what: "the surviving worker to log the completion",
    });
  });

  it("holds a route's concurrency across two workers", async () => {
    const { proxy } = await cluster(2, { concurrency: 2 });
    const before = env.backend.callsTo("/slow?ms=400&tag=conc").length;
    env.backend.resetPeak();
    const ids = await Promise.all(Array.from({ length: 8 }, () => proxy.submit("post", "/slow?ms=400&tag=conc", { body: "conc" })));
    for (const id of ids) await waitCompleted(proxy, id);
    expect(env.backend.callsTo("/slow?ms=400&tag=conc").length - before).toBe(8);
    // Never more than the route's concurrency at once, and the limit is used, not serialised.
    expect(env.backend.maxInFlight).toBe(2);
  });

  it("does not run a call that outlasts AckWait twice", async () => {
    const { proxy } = await cluster(2, { concurrency: 4 });
    const id = await proxy.submit("post", "/slow?ms=3500&tag=long", { body: "long" });
    const done = await waitCompleted(proxy, id);
    expect(done.body.attempts).toBe(1);
    expect(env.backend.callsTo("/slow?ms=3500&tag=long")).toHaveLength(1);
  });
});
