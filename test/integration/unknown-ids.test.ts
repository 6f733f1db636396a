/**
 * Polls of ids that name no job must not become JetStream load: a made-up 28-character id fails its
 * tag check in memory (no NATS request at all), and a well-formed unknown id (a legacy 22-character
 * one, or a real id whose job is gone) is looked up once and then remembered for a few seconds.
 * JetStream requests are counted by listening on `$JS.API.>` (direct gets included) from a
 * connection of the test's own, on a nats-server private to this file.
 */
import { randomBytes } from "node:crypto";
import type { Subscription } from "@nats-io/transport-node";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { JOBS } from "../helpers/jobs.js";
import { legacyJobId } from "../helpers/keys.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const inspector = useJetStreamInspector(env);
let app: TestApp;
let counting: { sub: Subscription; count: number };

beforeAll(async () => {
  app = await startApp(
    makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream: uniqueStream("unknown") },
      routes: [{ name: "jobs", methods: ["POST"], path: "/async/**" }],
    }),
    "proxy",
  );
  await app.app.ready;
  counting = { sub: inspector.nc.subscribe("$JS.API.>"), count: 0 };
  void (async () => {
    for await (const _ of counting.sub) counting.count += 1;
  })();
  await inspector.nc.flush();
});
afterAll(async () => {
  counting?.sub.unsubscribe();
  await app?.close();
});

/** JetStream API requests seen while `run` ran (a flush on both connections makes sure every one has arrived). */
async function jetStreamRequestsDuring(run: () => Promise<void>): Promise<number> {
  // A marker request of our own brackets the measurement: once we have seen it, every earlier one has arrived too.
  const settle = async () => {
    const seen = counting.count;
    await inspector.nc.request("$JS.API.INFO").catch(() => undefined);
    await waitFor(() => counting.count > seen, { what: "the marker request" });
    return counting.count;
  };
  const before = await settle();
  await run();
  const after = await settle();
  return after - before - 1;
}

describe("polls of unknown ids", () => {
  it("answers 2,000 made-up ids of the shape it issues 404 without a single JetStream request", async () => {
    // The shape of the ids this slowlane hands out: random ids of that length are what a guesser sends.
    const issued = (await request(app.url).post("/async/shape").send("x")).body.id as string;
    const bytes = (issued.length * 3) / 4;
    const requests = await jetStreamRequestsDuring(async () => {
      for (let batch = 0; batch < 20; batch += 1) {
        await Promise.all(
          Array.from({ length: 100 }, async () => {
            const res = await request(app.url).get(`${JOBS}/${randomBytes(bytes).toString("base64url")}`);
            expect(res.status).toBe(404);
          }),
        );
      }
    });
    expect(requests).toBe(0);
  });

  it("looks a well-formed unknown id up once, then answers its polls from memory", async () => {
    const id = legacyJobId();
    const first = await jetStreamRequestsDuring(async () => {
      expect((await request(app.url).get(`${JOBS}/${id}`)).status).toBe(404);
    });
    expect(first).toBeGreaterThan(0);
    const repeats = await jetStreamRequestsDuring(async () => {
      for (let i = 0; i < 50; i += 1) expect((await request(app.url).get(`${JOBS}/${id}/result`)).status).toBe(404);
    });
    // One more lookup at most, should the few seconds it is remembered for run out meanwhile.
    expect(repeats).toBeLessThanOrEqual(first);
  });
});
