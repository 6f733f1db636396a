/**
 * What happens when the parts around slowlane fail: the upstream is down, NATS goes away and
 * comes back, NATS is not there at start. Real processes, no mocks.
 */
import { rm } from "node:fs/promises";
import { createServer } from "node:net";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { JOBS } from "../helpers/jobs.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const defaults = { timeout: "5s", ttl: "5m", attempts: 1, retryAfter: "3s" };
const routes = [{ name: "jobs", methods: ["POST"], path: "/async/**" }];

describe("upstream down", () => {
  const slowlane = useSlowlane({
    stream: "faults",
    backend: false,
    config: async () => ({ upstream: `http://127.0.0.1:${await closedPort()}`, nats: { ackWait: "2s" }, defaults }),
    routes,
  });

  it("answers passthrough requests 502 problem+json and keeps running", async () => {
    for (let i = 0; i < 3; i++) {
      const res = await request(slowlane.url).get("/anything");
      expect(res.status).toBe(502);
      expect(res.headers["content-type"]).toBe("application/problem+json");
      expect(res.body.code).toBe("SLOWLANE_UPSTREAM_UNREACHABLE");
    }
  });

  it("fails an async job as unreachable and answers its result 502", async () => {
    const accepted = await request(slowlane.url).post("/async/x").send("payload");
    expect(accepted.status).toBe(202);
    const id = accepted.body.id as string;
    const done = await slowlane.waitFinal(id);
    expect(done.body).toMatchObject({ status: "failed", attempts: 1, error: { code: "SLOWLANE_UPSTREAM_UNREACHABLE" } });
    const result = await slowlane.result(id);
    expect(result.status).toBe(502);
    // Public bodies never carry the backend's address or the network error (issue 10 §6): the log does.
    expect(result.body.detail).toBe("the backend could not be reached");
    expect(done.body.error.message).toBe("the backend could not be reached");
    const failed = slowlane.logs.find((l) => l.msg === "job failed" && l.job === id);
    expect(failed?.detail).toMatch(/ECONNREFUSED.*127\.0\.0\.1:\d+/);
    expect(JSON.stringify(done.body)).not.toMatch(/ECONNREFUSED|127\.0\.0\.1/);
  });
});

describe("NATS unavailable", () => {
  const slowlane = useSlowlane({ stream: "faults", config: { nats: { ackWait: "2s" }, defaults }, routes });

  it("answers 503 on async routes while NATS is down, passthrough keeps working, and recovers", async () => {
    const before = await request(slowlane.url).post("/async/a").send("x");
    expect(before.status).toBe(202);

    await slowlane.nats.stop("SIGKILL");
    const refused = await waitFor(async () => {
      const res = await request(slowlane.url).post("/async/b").send("x");
      return res.status === 503 ? res : undefined;
    });
    expect(refused.headers["retry-after"]).toBe("3");
    expect(refused.headers["content-type"]).toBe("application/problem+json");
    expect(refused.body.code).toBe("SLOWLANE_NATS_UNAVAILABLE");
    const passthrough = await request(slowlane.url).get("/plain");
    expect(passthrough.status).toBe(200);

    await slowlane.nats.restart();
    const after = await waitFor(async () => {
      const res = await request(slowlane.url).post("/async/c").send("x");
      return res.status === 202 ? res : undefined;
    });
    // The job accepted before the outage survived the SIGKILL (file storage) and completes.
    for (const id of [before.body.id as string, after.body.id as string]) {
      const done = await slowlane.waitFinal(id);
      expect(done.body.status).toBe("completed");
    }
    expect(slowlane.backend.callsTo("/async/b")).toHaveLength(0);
  });

  it("sets JetStream up again when NATS comes back with an empty store", async () => {
    await slowlane.nats.stop("SIGKILL");
    await rm(slowlane.nats.storeDir, { recursive: true, force: true });
    await slowlane.nats.restart();
    const accepted = await waitFor(async () => {
      const res = await request(slowlane.url).post("/async/wiped").send("x");
      return res.status === 202 ? res : undefined;
    });
    const done = await slowlane.waitFinal(accepted.body.id as string);
    expect(done.body.status).toBe("completed");
    expect(slowlane.logs.some((l) => l.msg === "consumer re-created; pulling again")).toBe(true);
  });
});

describe("NATS not there at start", () => {
  const slowlane = useSlowlane({
    stream: "faults",
    nats: false,
    // It never becomes ready: nothing to wait for.
    ready: false,
    config: async () => ({ nats: { servers: `nats://127.0.0.1:${await closedPort()}`, ackWait: "2s" }, defaults }),
    routes,
  });

  it("starts anyway: says where it tried in one line, 503 on async routes, passthrough works", async () => {
    const line = await waitFor(() => slowlane.logs.find((l) => String(l.msg).startsWith("cannot connect to NATS")));
    expect(line.msg).toMatch(/nats:\/\/127\.0\.0\.1:\d+/);
    expect(line.msg).toMatch(/nats-server -js/);
    const res = await request(slowlane.url).post("/async/x").send("x");
    expect(res.status).toBe(503);
    expect(res.headers["retry-after"]).toBe("3");
    const status = await request(slowlane.url).get(`${JOBS}/AAAAAAAAAAAAAAAAAAAAAA`);
    expect(status.status).toBe(503);
    const passthrough = await request(slowlane.url).get("/plain");
    expect(passthrough.status).toBe(200);
  });
});
