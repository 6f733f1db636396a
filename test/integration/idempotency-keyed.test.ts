/**
 * `Idempotency-Key` under the server key: the id a key names is a keyed HMAC (nobody without the
 * key can compute it), a repeat that is not the same request (method, URL or body) is refused with
 * 422 instead of being handed the first job, and after a key rotation a repeat still finds the job
 * its first request made.
 */
import { createHash } from "node:crypto";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hasValidTag } from "../../src/security/job-ids.js";
import { generateKeyLine, parseServerKeys } from "../../src/security/server-keys.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { JOBS, uniqueTag, waitFinal } from "../helpers/jobs.js";
import { writeKeyFile } from "../helpers/keys.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";

const env = useNatsAndBackend();
const { streamMessages, liveObjects } = useJetStreamInspector(env);
const MiB = 1024 * 1024;
const oldLine = generateKeyLine();
const newLine = generateKeyLine();

function configFor(stream: string, keyFile: string) {
  return makeConfig({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream, ackWait: "2s" },
    security: { keyFile },
    defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
    // No methods: the same path under another method is the same route.
    routes: [{ name: "any", path: "/any/**" }],
  });
}

function send(app: TestApp, method: "post" | "put", path: string, key: string, body: string | Buffer) {
  return request(app.url)[method](path).set("idempotency-key", key).set("content-type", "application/octet-stream").send(body);
}

describe("Idempotency-Key with a key file", () => {
  let stream: string;
  let app: TestApp;

  beforeAll(async () => {
    stream = uniqueStream("idemkey");
    app = await startApp(configFor(stream, writeKeyFile([oldLine])), "proxy");
    await app.app.ready;
  });
  afterAll(async () => {
    await app?.close();
  });

  it("names a job by a keyed HMAC: a tagged id under the server key, not the plain hash anyone can recompute", async () => {
    const key = `key-${uniqueTag("hmac")}`;
    const res = await send(app, "post", "/any/x", key, "body");
    expect(res.status).toBe(202);
    const id = res.body.id as string;
    expect(hasValidTag(parseServerKeys(oldLine, "k"), id)).toBe(true);
    expect(hasValidTag(parseServerKeys(newLine, "k"), id)).toBe(false);
    // What ids were before: SHA-256 of prefix, route, caller and key, which needs no secret.
    const plain = createHash("sha256");
    for (const part of [stream, "any", "", key]) plain.update(part).update("\0");
    expect(id).not.toBe(plain.digest().subarray(0, 16).toString("base64url"));
  });

  it("answers a repeat with another body, URL or method 422 problem+json, and queues nothing", async () => {
    const key = `key-${uniqueTag("reuse")}`;
    const first = await send(app, "post", "/any/x?q=1", key, "the body");
    expect(first.status).toBe(202);
    const before = await streamMessages(stream);
    const repeats = [
      await send(app, "post", "/any/x?q=1", key, "another body"),
      await send(app, "post", "/any/y?q=1", key, "the body"),
      await send(app, "post", "/any/x?q=2", key, "the body"),
      await send(app, "put", "/any/x?q=1", key, "the body"),
    ];
    for (const res of repeats) {
      expect(res.status).toBe(422);
      expect(res.headers["content-type"]).toBe("application/problem+json");
      expect(res.body).toMatchObject({ status: 422, code: "SLOWLANE_IDEMPOTENCY_KEY_REUSED", type: "urn:slowlane:error:SLOWLANE_IDEMPOTENCY_KEY_REUSED" });
      expect(JSON.stringify(res.body)).not.toContain(first.body.id as string);
    }
    const same = await send(app, "post", "/any/x?q=1", key, "the body");
    expect(same.status).toBe(202);
    expect(same.body.id).toBe(first.body.id);
    expect(same.headers["idempotent-replayed"]).toBe("true");
    expect(await streamMessages(stream)).toBe(before);
  });

  it("compares claim-checked bodies too, hashing a repeat as it streams without storing it", async () => {
    const key = `key-${uniqueTag("large")}`;
    const body = Buffer.alloc(2 * MiB, 7);
    const changed = Buffer.from(body);
    changed[changed.length - 1] = 8;
    const first = await send(app, "post", "/any/large", key, body);
    expect(first.status).toBe(202);
    const objects = (await liveObjects(`${stream}_bodies`)).length;
    expect((await send(app, "post", "/any/large", key, changed)).status).toBe(422);
    const same = await send(app, "post", "/any/large", key, body);
    expect(same.status).toBe(202);
    expect(same.body.id).toBe(first.body.id);
    expect((await liveObjects(`${stream}_bodies`)).length).toBe(objects);
  });

  it("refuses the different one of two requests sent with one key at the same moment", async () => {
    const key = `key-${uniqueTag("race")}`;
    const answers = await Promise.all([send(app, "post", "/any/race", key, "one"), send(app, "post", "/any/race", key, "two")]);
    expect(answers.map((a) => a.status).sort()).toEqual([202, 422]);
  });
});

describe("Idempotency-Key across a key rotation", () => {
  it("finds the job a key made under the old key while that key is still listed", async () => {
    const stream = uniqueStream("idemrot");
    const tag = uniqueTag("rotate");
    const key = `key-${tag}`;
    const before = await startApp(configFor(stream, writeKeyFile([oldLine])));
    let id: string;
    try {
      await before.app.ready;
      const res = await send(before, "post", `/any/slow?ms=0&tag=${tag}`, key, "body");
      expect(res.status).toBe(202);
      id = res.body.id as string;
      await waitFinal(before.url, id);
    } finally {
      await before.close();
    }
    const after = await startApp(configFor(stream, writeKeyFile([newLine, oldLine])));
    try {
      await after.app.ready;
      const again = await send(after, "post", `/any/slow?ms=0&tag=${tag}`, key, "body");
      expect(again.status).toBe(202);
      expect(again.body.id).toBe(id);
      expect(again.headers["idempotent-replayed"]).toBe("true");
      expect((await send(after, "post", `/any/slow?ms=0&tag=${tag}`, key, "other")).status).toBe(422);
      // A new key gets an id under the new primary key.
      const fresh = await send(after, "post", `/any/slow?ms=0&tag=${tag}-2`, `${key}-2`, "body");
      expect(hasValidTag(parseServerKeys(newLine, "k"), fresh.body.id as string)).toBe(true);
      await waitFinal(after.url, fresh.body.id as string);
      expect((await request(after.url).get(`${JOBS}/${id}/result`)).status).toBe(200);
      // The backend ran the first request once, before the rotation, and never again.
      expect(env.backend.calls.filter((c) => c.url === `/any/slow?ms=0&tag=${tag}`)).toHaveLength(1);
    } finally {
      await after.close();
    }
  });
});
