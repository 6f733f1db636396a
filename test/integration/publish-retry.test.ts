/**
 * The accept's publish when JetStream's confirmation (PubAck) times out: the request may have been
 * stored all the same, so the proxy publishes it again under the same `Nats-Msg-Id` (JetStream keeps
 * one) instead of answering 503 at once. A nats-server paused with SIGSTOP for longer than the
 * publish timeout, then resumed, is the timeout: both publishes land, one message is kept, and the
 * client gets its 202.
 */
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { JOBS, waitFinal } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream, waitForLog } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";

const env = useNatsAndBackend();
const { streamMessages } = useJetStreamInspector(env);
const RETRYING = "JetStream did not confirm the publish in time; publishing again under the same message id";

describe("a PubAck that times out", () => {
  const stream = uniqueStream("pubretry");
  const config = () =>
    makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream },
      routes: [{ name: "jobs", methods: ["POST"], path: "/async/**" }],
    });
  let proxy: TestApp;

  beforeAll(async () => {
    proxy = await startApp(config(), "proxy");
    await proxy.app.ready;
  });
  afterAll(async () => {
    await proxy?.close();
  });

  it("is published again under the same message id: the client gets a 202, JetStream keeps one message", async () => {
    const pid = env.nats.pid as number;
    process.kill(pid, "SIGSTOP");
    let pending: Promise<request.Response> | undefined;
    try {
      pending = request(proxy.url).post("/async/paused?tag=pubretry").send("payload").then((res) => res);
      // Resume only once the first confirmation has timed out and the proxy publishes again.
      const first = await Promise.race([
        waitForLog(proxy.logs, RETRYING, 20_000).then(() => "retrying"),
        pending.then((res) => `answered ${res.status}`),
      ]);
      expect(first).toBe("retrying");
    } finally {
      process.kill(pid, "SIGCONT");
    }
    const res = await pending;
    expect(res.status, res.text).toBe(202);
    const id = res.body.id as string;
    expect(await streamMessages(stream)).toBe(1);
    const status = await request(proxy.url).get(`${JOBS}/${id}`);
    expect(status.body).toMatchObject({ id, status: "queued" });
    expect(proxy.logs.filter((l) => l.msg === "job accepted" && l.job === id)).toHaveLength(1);

    // And it runs once, with its body.
    const worker = await startApp(config(), "worker");
    try {
      await worker.app.ready;
      await waitFinal(proxy.url, id);
      const calls = env.backend.callsTo("/async/paused?tag=pubretry");
      expect(calls).toHaveLength(1);
      expect(calls[0]?.body.toString()).toBe("payload");
    } finally {
      await worker.close();
    }
  });
});
