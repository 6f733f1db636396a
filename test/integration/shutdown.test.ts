/**
 * A worker that stops while a call runs past its drain time gives the job back at once (nak),
 * so another worker runs it without waiting for AckWait.
 */
import request from "supertest";
import { describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { makeConfig, startApp, uniqueStream, waitForLog } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

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
    const first = await startApp(config, "worker", 200);
    await Promise.all([proxy.app.ready, first.app.ready]);
    try {
      const accepted = await request(proxy.url).post("/slow?ms=2000&tag=drain").send("x");
      const id = accepted.body.id as string;
      await waitForLog(first.logs, "job started");
      await first.close();
      expect(first.logs.some((l) => l.msg === "drain timeout: aborting running calls; they go back to the queue")).toBe(true);

      const second = await startApp(config, "worker");
      try {
        const done = await waitFor(async () => {
          const res = await request(proxy.url).get(`/_slowlane/jobs/${id}`).redirects(0);
          return res.status === 303 ? res : undefined;
        });
        expect(done.body).toMatchObject({ status: "completed", attempts: 2 });
        expect(env.backend.callsTo("/slow?ms=2000&tag=drain")).toHaveLength(2);
      } finally {
        await second.close();
      }
    } finally {
      await proxy.close();
    }
  });
});
