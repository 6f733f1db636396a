/**
 * The built CLI as ops run it: `check` on good and bad files, and `run` stopping cleanly on
 * SIGTERM with a call in flight. Needs `npm run build` first (npm test does it).
 */
import { fileURLToPath } from "node:url";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { spawnSlowlane, uniqueStream, waitForLog, writeConfigFile } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const EXAMPLE = fileURLToPath(new URL("../../config/slowlane.yaml", import.meta.url));

function output(logs: { msg?: string }[]): string {
  return logs.map((l) => l.msg ?? "").join("\n");
}

describe("slowlane check", () => {
  it("accepts the example config and prints the resolved routes", async () => {
    const check = spawnSlowlane("check", EXAMPLE);
    expect(await check.exited).toBe(0);
    const text = output(check.logs);
    expect(text).toContain("reports");
    expect(text).toContain("/reports/**");
    expect(text).toContain("exports");
  });

  it("refuses a bad file with every problem, each with file:line and key path, exit 1", async () => {
    const file = writeConfigFile({
      upstream: "not a url",
      routes: [{ name: "a", path: "/a", timeout: "ten minutes" }, { name: "b", path: "/b", timout: "1s" }],
    });
    const check = spawnSlowlane("check", file);
    expect(await check.exited).toBe(1);
    const text = output(check.logs);
    expect(text).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+ upstream:`));
    expect(text).toMatch(/routes\[0\]\.timeout: "ten minutes" is not a duration/);
    expect(text).toMatch(/routes\[1\].*timout/);
  });
});

describe("slowlane run", () => {
  const env = useNatsAndBackend();

  it("exits 1 with the reason, not the usage text, when its admin port is taken", async () => {
    const file = writeConfigFile({
      listen: "127.0.0.1:0",
      admin: { listen: `127.0.0.1:${env.nats.port}` },
      nats: { servers: env.nats.url, stream: uniqueStream("busyport") },
    });
    const run = spawnSlowlane("run", file);
    expect(await run.exited).toBe(1);
    const fatal = run.logs.find((l) => String(l.msg).startsWith("could not start")) as { err?: { message?: string } } | undefined;
    expect(fatal?.err?.message).toContain("EADDRINUSE");
    expect(output(run.logs)).not.toContain("usage: slowlane");
  });

  it("on SIGTERM finishes the call in flight, then exits 0", async () => {
    const file = writeConfigFile({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream: uniqueStream("cli"), ackWait: "2s" },
      routes: [{ name: "work", methods: ["POST"], path: "/slow" }],
    });
    const run = spawnSlowlane("run", file);
    const listening = await waitForLog(run.logs, "proxy listening");
    await waitForLog(run.logs, "forwarder started");
    const url = listening.url as string;

    const accepted = await request(url).post("/slow?ms=1500&tag=sigterm").send("x");
    expect(accepted.status).toBe(202);
    await waitFor(() => env.backend.callsTo("/slow?ms=1500&tag=sigterm").length === 1);
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);

    const msgs = run.logs.map((l) => l.msg);
    expect(msgs.indexOf("job completed")).toBeGreaterThan(msgs.indexOf("stopping: no new requests, finishing the ones in flight"));
    expect(msgs).toContain("stopped");
  });
});
