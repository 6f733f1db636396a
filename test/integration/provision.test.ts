/**
 * JetStream set-up is idempotent and follows the config; state lives in JetStream, so proxy
 * replicas and restarts see the same jobs.
 */
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { nanos } from "@nats-io/transport-node";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { provision } from "../../src/nats/provision.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";

const env = useNatsAndBackend();
let nc: NatsConnection;

beforeAll(async () => {
  nc = await connect({ servers: env.nats.url });
});
afterAll(async () => {
  await nc?.close();
});

function configDoc(stream: string, route: Record<string, unknown> = {}) {
  return {
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "5s" },
    routes: [{ name: "reports", methods: ["POST"], path: "/reports/**", concurrency: 3, ttl: "1h", ...route }],
  };
}

describe("provisioning", () => {
  it("creates the stream, a consumer per route and the stores, and is idempotent", async () => {
    const stream = uniqueStream("prov");
    const config = makeConfig(configDoc(stream));
    await provision(nc, config, { consumers: true });
    const ctx = await provision(nc, config, { consumers: true });

    const si = await ctx.jsm.streams.info(stream);
    expect(si.config.retention).toBe("workqueue");
    expect(si.config.storage).toBe("file");
    const ci = await ctx.jsm.consumers.info(stream, "route_reports");
    expect(ci.config.max_ack_pending).toBe(3);
    expect(ci.config.ack_wait).toBe(nanos(5_000));
    expect(ci.config.filter_subject).toBe(`${stream}.jobs.reports.*`);
    const consumers = [];
    for await (const c of ctx.jsm.consumers.list(stream)) consumers.push(c.name);
    expect(consumers).toEqual(["route_reports"]);
  });

  it("applies changed settings to what exists", async () => {
    const stream = uniqueStream("prov");
    await provision(nc, makeConfig(configDoc(stream)), { consumers: true });
    const ctx = await provision(nc, makeConfig(configDoc(stream, { concurrency: 7, ttl: "2h" })), { consumers: true });
    const ci = await ctx.jsm.consumers.info(stream, "route_reports");
    expect(ci.config.max_ack_pending).toBe(7);
    const results = await ctx.jsm.streams.info(`KV_${stream}_results`);
    expect(results.config.max_age).toBe(nanos(2 * 3600_000));
    // Bodies include claim-checked requests, which must outlive the wait in the queue (24 h without a
    // deadline), every attempt with its longest backoff, and then the ttl of a failed job.
    const bodies = await ctx.jsm.streams.info(`OBJ_${stream}_bodies`);
    expect(bodies.config.max_age).toBe(nanos(24 * 3600_000 + 3 * (10 * 60_000 + 60_000) + 2 * 3600_000));
  });

  it("keeps claim-checked request bodies as long as a job may wait: its deadline, every attempt, then the ttl of a failed job", async () => {
    const stream = uniqueStream("prov");
    const doc = { ...configDoc(stream, { ttl: "1h", timeout: "10m", attempts: 3, backoff: { max: "1m" } }), defaults: { deadline: "5m", ttl: "1h" } };
    const ctx = await provision(nc, makeConfig(doc), { consumers: true });
    const bodies = await ctx.jsm.streams.info(`OBJ_${stream}_bodies`);
    expect(bodies.config.max_age).toBe(nanos(5 * 60_000 + 3 * (10 * 60_000 + 60_000) + 3600_000));
    // Open circuits: short-lived, in memory, gone 30 s after their worker stopped rewriting them.
    const circuits = await ctx.jsm.streams.info(`KV_${stream}_circuits`);
    expect(circuits.config.max_age).toBe(nanos(30_000));
    expect(circuits.config.storage).toBe("memory");
  });

  it("creates the dead-letter stream, and sets replicas on every stream and bucket", async () => {
    const stream = uniqueStream("prov");
    const ctx = await provision(nc, makeConfig(configDoc(stream)), { consumers: true });
    const dead = await ctx.jsm.streams.info(`${stream}_dead`);
    expect(dead.config.subjects).toEqual([`${stream}.dead.>`]);
    expect(dead.config.retention).toBe("limits");
    expect(dead.config.max_msgs_per_subject).toBe(1);
    for (const name of [stream, `${stream}_dead`, `KV_${stream}_jobs`, `KV_${stream}_results`, `OBJ_${stream}_bodies`, `KV_${stream}_circuits`]) {
      expect((await ctx.jsm.streams.info(name)).config.num_replicas, name).toBe(1);
    }
  });
});

describe("state lives in JetStream", () => {
  it("a queued job is visible to any proxy replica, survives a proxy restart and completes when a worker starts", async () => {
    const doc = configDoc(uniqueStream("replica"));
    const first = await startApp(makeConfig(doc), "proxy");
    await first.app.ready;
    const accepted = await request(first.url).post("/reports/q3?ms=0").send("body");
    expect(accepted.status).toBe(202);
    const id = accepted.body.id as string;
    await first.close();

    const replica = await startApp(makeConfig(doc), "proxy");
    await replica.app.ready;
    const queued = await replica.status(id);
    expect(queued.status).toBe(202);
    expect(queued.body).toMatchObject({ id, status: "queued", attempts: 0, route: "reports" });
    expect(env.backend.callsTo("/reports/q3")).toHaveLength(0);

    const worker = await startApp(makeConfig(doc), "worker");
    try {
      const done = await replica.waitFinal(id);
      expect(done.body).toMatchObject({ status: "completed", attempts: 1, responseStatus: 200 });
      expect(env.backend.callsTo("/reports/q3")).toHaveLength(1);
    } finally {
      await worker.close();
      await replica.close();
    }
  });

  it("a route removed from the config before a restart: its queued job is still found and worked", async () => {
    const stream = uniqueStream("orphan");
    const both = {
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream, ackWait: "5s" },
      routes: [
        { name: "keep", methods: ["POST"], path: "/keep/**" },
        { name: "gone", methods: ["POST"], path: "/gone/**" },
      ],
    };
    // A worker once ran with both routes (so both consumers exist); a job for "gone" waits, no worker now.
    const early = await startApp(makeConfig(both), "worker");
    await early.app.ready;
    await early.close();
    const proxy = await startApp(makeConfig(both), "proxy");
    await proxy.app.ready;
    const accepted = await request(proxy.url).post("/gone/x?tag=orphan").send("body");
    expect(accepted.status).toBe(202);
    const id = accepted.body.id as string;
    await proxy.close();

    // The route is removed from the config; a new proxy and a new worker start with it.
    const onlyKeep = makeConfig({ ...both, routes: [both.routes[0]] });
    const replica = await startApp(onlyKeep, "proxy");
    await replica.app.ready;
    try {
      const queued = await replica.status(id);
      expect(queued.status).toBe(202);
      expect(queued.body).toMatchObject({ id, status: "queued", route: "gone" });
      // Requests on the removed route's path now pass through.
      expect((await request(replica.url).post("/gone/y?tag=orphan-pass").send("x")).status).toBe(200);

      const worker = await startApp(onlyKeep, "worker");
      try {
        const done = await replica.waitFinal(id);
        expect(done.body).toMatchObject({ status: "completed", route: "gone" });
        expect(env.backend.callsTo("/gone/x?tag=orphan")).toHaveLength(1);
        expect(worker.logs.some((l) => l.msg === "working the queued jobs of routes no longer in the config")).toBe(true);
      } finally {
        await worker.close();
      }
    } finally {
      await replica.close();
    }
  });
});
