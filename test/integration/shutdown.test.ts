/**
 * A worker that stops while a call runs past its drain time gives the job back at once (nak),
 * so another worker runs it without waiting for AckWait.
 */
import { Agent, request as httpRequest } from "node:http";
import { describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { makeConfig, startApp, uniqueStream, waitForLog } from "../helpers/slowlane.js";

const env = useNatsAndBackend();

describe("worker shutdown", () => {
  it("aborts a call still running after the drain time and naks it for another worker", async () => {
    const config = makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      // AckWait far longer than the test: only a nak can hand the job over in time.
      nats: { servers: env.nats.url, stream: uniqueStream("drain"), ackWait: "5m" },
      routes: [{ name: "work", methods: ["POST"], path: "/slow" }],
    });
    const proxy = await startApp(config, "proxy");
    const first = await startApp(config, { role: "worker", drainMs: 200 });
    await Promise.all([proxy.app.ready, first.app.ready]);
    try {
      const id = await proxy.submit("post", "/slow?ms=2000&tag=drain", { body: "x" });
      await waitForLog(first.logs, "job started");
      await first.close();
      expect(first.logs.some((l) => l.msg === "drain timeout: aborting running calls; they go back to the queue")).toBe(true);

      const second = await startApp(config, "worker");
      try {
        const done = await proxy.waitFinal(id);
        // The aborted call is in the history but is not counted as an attempt: it was not the job's fault.
        expect(done.body).toMatchObject({ status: "completed", attempts: 1 });
        expect((done.body.history as { outcome: string }[]).map((h) => h.outcome)).toEqual(["aborted", "200"]);
        expect(env.backend.callsTo("/slow?ms=2000&tag=drain")).toHaveLength(2);
      } finally {
        await second.close();
      }
    } finally {
      await proxy.close();
    }
  });
});

describe("proxy shutdown", () => {
  it("stops taking connections but finishes an accept in flight, even on a keep-alive connection", async () => {
    const config = makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream: uniqueStream("pdrain") },
      routes: [{ name: "work", methods: ["POST"], path: "/slow" }],
    });
    const proxy = await startApp(config, "proxy");
    await proxy.app.ready;
    const { port } = new URL(proxy.url);
    const agent = new Agent({ keepAlive: true });
    try {
      // A request whose body is only half sent when the shutdown starts.
      let connected!: () => void;
      const isConnected = new Promise<void>((resolve) => (connected = resolve));
      const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest(
          { port, method: "POST", path: "/slow?ms=0&tag=inflight", agent, headers: { "content-length": "10" } },
          (res) => {
            let body = "";
            res.on("data", (c: Buffer) => (body += c.toString()));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
          },
        );
        req.on("error", reject);
        req.on("socket", (socket) => socket.on("connect", connected));
        req.write("12345");
        setTimeout(() => req.end("67890"), 300);
      });
      await isConnected;
      await new Promise((resolve) => setTimeout(resolve, 100));
      const closed = proxy.close();
      const { status, body } = await answer;
      expect(status).toBe(202);
      expect(JSON.parse(body)).toMatchObject({ status: "queued" });
      // close() resolves without waiting for the keep-alive connection to time out.
      await closed;
      await expect(
        new Promise((resolve, reject) => httpRequest({ port, path: "/", agent: false }, resolve).on("error", reject).end()),
      ).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      agent.destroy();
      await proxy.close();
    }
  });
});
