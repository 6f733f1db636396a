/**
 * Owner binding (route `owner`): a job remembers a keyed hash of its caller's identity, and its
 * status, result and cancel answer only a request that shows the same identity. Anyone else gets
 * exactly the 404 of an id that never existed (never a 403: no oracle for existence). Through real
 * HTTP, a real nats-server and a real backend.
 */
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createJobId } from "../../src/jobs/job-id.js";
import { generateKeyLine, parseServerKeys } from "../../src/security/server-keys.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { JOBS, uniqueTag, waitFinal } from "../helpers/jobs.js";
import { writeKeyFile } from "../helpers/keys.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const keyLine = generateKeyLine();
const keys = parseServerKeys(keyLine, "test");
const keyFile = writeKeyFile([keyLine]);

const ROUTES = [
  { name: "bound", methods: ["POST"], path: "/bound/**" },
  { name: "cookie", methods: ["POST"], path: "/cookie/**", owner: ["cookie:session"] },
  { name: "pair", methods: ["POST"], path: "/pair/**", owner: ["x-api-key", "authorization"] },
  { name: "open", methods: ["POST"], path: "/open/**", owner: [] },
];

function configFor(stream: string, routes: unknown[] = ROUTES) {
  return makeConfig({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "2s" },
    security: { keyFile },
    defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    routes,
  });
}

async function submit(app: TestApp, path: string, headers: Record<string, string>): Promise<string> {
  const res = await request(app.url).post(path).set(headers).send("payload");
  expect(res.status, res.text).toBe(202);
  return res.body.id as string;
}

/** Every answer a caller can get about a job: status (GET, HEAD), result, cancel. */
async function answersFor(app: TestApp, id: string, headers: Record<string, string>) {
  const [status, head, result] = await Promise.all([
    request(app.url).get(`${JOBS}/${id}`).set(headers).redirects(0),
    request(app.url).head(`${JOBS}/${id}`).set(headers).redirects(0),
    request(app.url).get(`${JOBS}/${id}/result`).set(headers).redirects(0),
  ]);
  return { status, head, result };
}

/** The answers of an id slowlane made (its tag is valid) but that names no job. */
async function unknownAnswers(app: TestApp) {
  const unknown = createJobId(keys);
  const answers = await answersFor(app, unknown, {});
  const cancel = await request(app.url).delete(`${JOBS}/${unknown}`);
  return { ...answers, cancel, unknown };
}

/** Asserts that `id` looks to these headers exactly like an unknown id. */
async function expectHidden(app: TestApp, id: string, headers: Record<string, string>): Promise<void> {
  const reference = await unknownAnswers(app);
  const seen = await answersFor(app, id, headers);
  for (const kind of ["status", "head", "result"] as const) {
    expect(seen[kind].status, `${kind} with ${JSON.stringify(headers)}`).toBe(404);
    expect(seen[kind].headers["content-type"]).toBe(reference[kind].headers["content-type"]);
    expect(seen[kind].text).toBe(reference[kind].text);
  }
  const cancel = await request(app.url).delete(`${JOBS}/${id}`).set(headers);
  expect(cancel.status).toBe(404);
  expect(cancel.text).toBe(reference.cancel.text);
}

describe("owner binding with a worker running", () => {
  let stream: string;
  let app: TestApp;

  beforeAll(async () => {
    stream = uniqueStream("owner");
    app = await startApp(configFor(stream));
    await app.app.ready;
  });
  afterAll(async () => {
    await app?.close();
  });

  it("shows a job to the Authorization that submitted it, and to nobody else (the 404 of an unknown id)", async () => {
    const tag = uniqueTag("alice");
    const alice = { authorization: "Bearer alice-token" };
    const id = await submit(app, `/bound/x?tag=${tag}`, alice);
    await waitFinal(app.url, id, 15_000, alice);

    const others: Record<string, string>[] = [{}, { authorization: "Bearer bob-token" }, { authorization: "bearer alice-token" }, { cookie: "authorization=Bearer alice-token" }];
    for (const other of others) {
      await expectHidden(app, id, other);
    }
    const mine = await answersFor(app, id, alice);
    expect(mine.status.status).toBe(303);
    expect(mine.result.status).toBe(200);
    // Nobody else's DELETE touched it; the owner's does.
    expect((await request(app.url).delete(`${JOBS}/${id}`).set(alice)).status).toBe(204);
    expect((await request(app.url).get(`${JOBS}/${id}`).set(alice)).status).toBe(404);
    expect(env.backend.callsTo(`/bound/x?tag=${tag}`)).toHaveLength(1);
  });

  it("binds by a named cookie, whatever the other cookies", async () => {
    const tag = uniqueTag("cookie");
    const id = await submit(app, `/cookie/x?tag=${tag}`, { cookie: "theme=dark; session=s-123; lang=en" });
    await waitFinal(app.url, id, 15_000, { cookie: "session=s-123" });
    expect((await request(app.url).get(`${JOBS}/${id}/result`).set("cookie", "lang=fr; session=s-123")).status).toBe(200);
    const others: Record<string, string>[] = [{}, { cookie: "session=s-124" }, { cookie: "theme=dark" }, { authorization: "session=s-123" }];
    for (const other of others) {
      await expectHidden(app, id, other);
    }
  });

  it("binds by every listed value: the same identity means all of them, absent ones included", async () => {
    const tag = uniqueTag("pair");
    const id = await submit(app, `/pair/x?tag=${tag}`, { "x-api-key": "k-1" });
    await waitFinal(app.url, id, 15_000, { "x-api-key": "k-1" });
    await expectHidden(app, id, { "x-api-key": "k-1", authorization: "Bearer k-1" });
    await expectHidden(app, id, { "x-api-key": "k-2" });
  });

  it("leaves a job submitted with none of the identity unbound, and a route with owner: [] unbound", async () => {
    const anonymous = await submit(app, `/bound/x?tag=${uniqueTag("anon")}`, {});
    await waitFinal(app.url, anonymous, 15_000, { authorization: "Bearer anyone" });
    expect((await request(app.url).get(`${JOBS}/${anonymous}/result`)).status).toBe(200);

    const open = await submit(app, `/open/x?tag=${uniqueTag("open")}`, { authorization: "Bearer alice-token" });
    await waitFinal(app.url, open);
    expect((await request(app.url).get(`${JOBS}/${open}/result`).set("authorization", "Bearer bob-token")).status).toBe(200);
  });

  it("keeps the owner list a job was accepted under when the route's list changes later", async () => {
    const alice = { authorization: "Bearer alice-token" };
    const id = await submit(app, `/bound/x?tag=${uniqueTag("relist")}`, alice);
    await waitFinal(app.url, id, 15_000, alice);
    // Another proxy of the same deployment whose route now binds by x-api-key instead.
    const other = await startApp(configFor(stream, [{ name: "bound", methods: ["POST"], path: "/bound/**", owner: ["x-api-key"] }]), "proxy");
    try {
      await other.app.ready;
      expect((await request(other.url).get(`${JOBS}/${id}`).set(alice).redirects(0)).status).toBe(303);
      await expectHidden(other, id, { "x-api-key": "Bearer alice-token" });
    } finally {
      await other.close();
    }
  });
});

describe("owner binding of a job no worker has started", () => {
  let app: TestApp;

  beforeAll(async () => {
    app = await startApp(configFor(uniqueStream("ownerq")), "proxy");
    await app.app.ready;
  });
  afterAll(async () => {
    await app?.close();
  });

  it("hides the queued job from other callers, and keeps it queued when they try to cancel it", async () => {
    const alice = { authorization: "Bearer alice-token" };
    const id = await submit(app, `/bound/x?tag=${uniqueTag("queued")}`, alice);
    await expectHidden(app, id, { authorization: "Bearer mallory" });
    const status = await request(app.url).get(`${JOBS}/${id}`).set(alice);
    expect(status.status).toBe(202);
    expect(status.body.status).toBe("queued");
    expect((await request(app.url).delete(`${JOBS}/${id}`).set(alice)).status).toBe(204);
    expect((await request(app.url).get(`${JOBS}/${id}`).set(alice)).body.status).toBe("canceled");
  });
});

describe("owner binding without a key file", () => {
  it("uses one random key kept in NATS, shared by every replica", async () => {
    const stream = uniqueStream("ownershared");
    const doc = {
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream },
      routes: [{ name: "bound", methods: ["POST"], path: "/bound/**" }],
    };
    const [a, b] = await Promise.all([startApp(makeConfig(doc), "proxy"), startApp(makeConfig(doc), "proxy")]);
    try {
      await Promise.all([a.app.ready, b.app.ready]);
      const alice = { authorization: "Bearer alice-token" };
      const id = await submit(a, "/bound/x", alice);
      expect(id).toMatch(/^[A-Za-z0-9_-]{28}$/);
      // Replica B recognises A's id (same tag key) and A's owner tag.
      await waitFor(async () => (await request(b.url).get(`${JOBS}/${id}`).set(alice)).status === 202, { what: "B to see the job" });
      await expectHidden(b, id, { authorization: "Bearer bob" });
      for (const app of [a, b]) {
        expect(app.logs.find((l) => String(l.msg).startsWith("storage: NOT encrypted"))).toBeDefined();
        expect(app.logs.find((l) => l.msg === "server key read from NATS (shared by every replica)")).toBeDefined();
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
