/**
 * Bodies larger than one NATS message, through real HTTP, a real nats-server and a real backend:
 * request bodies go through the Object Store (the claim check) and reach the backend byte for
 * byte with a Content-Length; responses are stored chunked and replayed exactly; limits
 * (`maxBodySize`, `maxResponseSize`) refuse before queueing or fail without retrying; a client that
 * goes away mid-upload leaves nothing behind.
 */
import { request as httpRequest } from "node:http";
import type { ClientRequest, IncomingHttpHeaders } from "node:http";
import { jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { binaryPattern } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { uniqueStream } from "../helpers/slowlane.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { JOBS, uniqueTag } from "../helpers/jobs.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";

const MiB = 1024 * 1024;
const env = useNatsAndBackend();
const inspector = useJetStreamInspector(env);
const { streamMessages, kvValue } = inspector;
const stream = uniqueStream("large");
const app = useSlowlane({
  environment: env,
  config: {
    nats: { stream, ackWait: "2s" },
    defaults: { timeout: "20s", ttl: "5m", attempts: 1, retryAfter: "1s" },
  },
  routes: [
    // maxBodySize is the default, 32MiB.
    { name: "echo", methods: ["POST"], path: "/echo/**" },
    { name: "capped-body", methods: ["POST"], path: "/capped/**", maxBodySize: "2MiB" },
    { name: "binary", methods: ["GET"], path: "/binary" },
    { name: "capped-response", methods: ["POST"], path: "/binary", maxResponseSize: "1MiB", attempts: 3 },
    { name: "capped-small-response", methods: ["PUT"], path: "/binary", maxResponseSize: "512KiB", attempts: 3 },
    { name: "flaky", methods: ["POST"], path: "/flaky", attempts: 3, retryOn: [503], backoff: { initial: "100ms" } },
  ],
});

// ---- looking at JetStream ---------------------------------------------------------------------

const bodiesStore = () => `${stream}_bodies`;

const liveObjects = () => inspector.liveObjects(bodiesStore());
const hasObject = (name: string) => inspector.hasObject(bodiesStore(), name);

/** Chunk messages in the bodies store that belong to no live object: what an interrupted or lost upload leaks. */
async function orphanChunks(): Promise<number> {
  const jsm = await jetstreamManager(inspector.nc);
  const bucketStream = `OBJ_${bodiesStore()}`;
  const info = await jsm.streams.info(bucketStream, { subjects_filter: `$O.${bodiesStore()}.C.>` });
  const os = await new Objm(inspector.nc).open(bodiesStore());
  const live = new Set((await os.list()).filter((o) => !o.deleted).map((o) => o.nuid));
  let orphans = 0;
  for (const [subject, count] of Object.entries(info.state.subjects ?? {})) {
    if (!live.has(subject.slice(subject.lastIndexOf(".") + 1))) orphans += count;
  }
  return orphans;
}


// ---- HTTP helpers -----------------------------------------------------------------------------


/** A body of `size` bytes that differs from every other `seed`'s, so a mix-up between jobs shows. */
function patternFor(size: number, seed: number): Buffer {
  const buf = binaryPattern(size);
  for (let i = 0; i < size; i += 4096) buf[i] = seed & 0xff;
  return buf;
}

const waitFinal = (id: string) => app.waitFinal(id, 20_000);

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * Uploads `body` with Node's http client, in 64 KiB writes: with a Content-Length when `declared`
 * is given, else chunked. Resolves with the answer, even when the server stops reading and closes
 * after answering (the write side then fails, which is expected here).
 */
function upload(path: string, body: Buffer, declared?: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { "content-type": "application/octet-stream" };
    if (declared !== undefined) headers["content-length"] = declared;
    const req = httpRequest(`${app.url}${path}`, { method: "POST", headers });
    let answered = false;
    req.on("response", (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      const done = () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      res.on("end", done);
      res.on("error", done);
    });
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    void (async () => {
      for (let offset = 0; offset < body.byteLength && !req.destroyed; offset += 64 * 1024) {
        if (!req.write(body.subarray(offset, offset + 64 * 1024))) {
          await new Promise((r) => {
            req.once("drain", r);
            req.once("close", r);
          });
        }
      }
      if (!req.destroyed) req.end();
    })();
  });
}

/** Starts an upload of `sent` bytes (of a declared `declared`, or chunked) and leaves the request open. */
async function startUpload(path: string, sent: number, declared?: number): Promise<ClientRequest> {
  const headers: Record<string, string | number> = { "content-type": "application/octet-stream" };
  if (declared !== undefined) headers["content-length"] = declared;
  const req = httpRequest(`${app.url}${path}`, { method: "POST", headers });
  req.on("error", () => undefined); // destroyed on purpose
  const body = binaryPattern(sent);
  for (let offset = 0; offset < sent; offset += 64 * 1024) {
    if (!req.write(body.subarray(offset, offset + 64 * 1024))) await new Promise((r) => req.once("drain", r));
  }
  return req;
}

function expectTooLarge(answer: { status: number; headers: IncomingHttpHeaders; body: unknown }): void {
  expect(answer.status).toBe(413);
  expect(answer.headers["content-type"]).toBe("application/problem+json");
  expect(answer.body).toMatchObject({ status: 413, code: "SLOWLANE_BODY_TOO_LARGE", limitBytes: 2 * MiB });
}

// ---- request bodies ---------------------------------------------------------------------------

describe("request bodies larger than a NATS message", () => {
  it("accepts 3 MiB: the backend gets exactly those bytes with a Content-Length, then the stored copy is deleted", async () => {
    const size = 3 * MiB;
    const body = patternFor(size, 1);
    const path = `/echo/${uniqueTag("big")}`;
    const id = await app.submit("post", path, { body });
    const accepted = app.logs.find((l) => l.job === id && l.msg === "job accepted");
    expect(accepted).toMatchObject({ bodyBytes: size, claimCheck: true });

    const done = await waitFinal(id);
    expect(done.body).toMatchObject({ status: "completed", responseStatus: 200 });
    const [call] = env.backend.callsTo(path);
    expect(call?.headers["content-length"]).toBe(String(size));
    expect(call?.headers["transfer-encoding"]).toBeUndefined();
    expect(Buffer.compare(call?.body ?? Buffer.alloc(0), body)).toBe(0);
    expect(env.backend.callsTo(path)).toHaveLength(1);

    // The echo (a JSON of 4 MiB, itself in the Object Store) carries the same bytes back.
    const result = await app.resultBytes(id);
    expect(result.status).toBe(200);
    const echo = JSON.parse((result.body as Buffer).toString("utf8")) as { headers: Record<string, string>; body: string };
    expect(Buffer.compare(Buffer.from(echo.body, "base64"), body)).toBe(0);
    expect(echo.headers["content-length"]).toBe(String(size));

    await waitFor(async () => !(await hasObject(`${id}.request`)), { what: "the request body to be deleted" });
    // Deleting an object marks it deleted before purging its chunks: wait out deletions in progress.
    await waitFor(async () => (await orphanChunks()) === 0, { what: "no chunk left without its object" });
  });

  it("keeps a body just under the message limit inline, and one just over it in the Object Store", async () => {
    // max_payload (1 MiB) minus the 64 KiB kept for the envelope.
    const inlineLimit = MiB - 64 * 1024;
    for (const [size, claimCheck] of [
      [inlineLimit, false],
      [inlineLimit + 1, true],
    ] as const) {
      const body = patternFor(size, size & 0xff);
      const path = `/echo/${uniqueTag("edge")}`;
      const id = await app.submit("post", path, { body });
      expect(app.logs.find((l) => l.job === id && l.msg === "job accepted")).toMatchObject({ bodyBytes: size, claimCheck });
      await waitFinal(id);
      const [call] = env.backend.callsTo(path);
      expect(call?.headers["content-length"]).toBe(String(size));
      expect(Buffer.compare(call?.body ?? Buffer.alloc(0), body)).toBe(0);
    }
  });

  it("replays a claim-checked body exactly on every attempt, and deletes it once the job completes", async () => {
    const key = uniqueTag("retry");
    const body = patternFor(2 * MiB, 7);
    const id = await app.submit("post", `/flaky?key=${key}&fails=1&status=503`, { body });
    const done = await waitFinal(id);
    expect(done.body).toMatchObject({ status: "completed", responseStatus: 200, attempts: 2 });
    const calls = env.backend.callsTo(`/flaky?key=${key}`);
    expect(calls).toHaveLength(2);
    for (const call of calls) {
      expect(call.headers["content-length"]).toBe(String(2 * MiB));
      expect(Buffer.compare(call.body, body)).toBe(0);
    }
    await waitFor(async () => !(await hasObject(`${id}.request`)), { what: "the request body to be deleted" });
  });

  it("refuses a body over the route's maxBodySize announced by Content-Length: 413, nothing queued or stored", async () => {
    const before = { queued: await streamMessages(stream), stored: await streamMessages(`OBJ_${bodiesStore()}`) };
    const path = `/capped/${uniqueTag("declared")}`;
    const answer = await upload(path, binaryPattern(3 * MiB), 3 * MiB);
    expectTooLarge({ ...answer, body: JSON.parse(answer.body.toString("utf8")) });

    expect(await streamMessages(stream)).toBe(before.queued);
    expect(await streamMessages(`OBJ_${bodiesStore()}`)).toBe(before.stored);
    expect((await liveObjects()).filter((n) => n.includes(".request"))).toEqual([]);
    expect(env.backend.callsTo(path)).toHaveLength(0);
  });

  it("refuses a chunked body that grows over maxBodySize: 413, nothing queued, the partial upload purged", async () => {
    const before = await streamMessages(stream);
    const path = `/capped/${uniqueTag("chunked")}`;
    const answer = await upload(path, binaryPattern(3 * MiB));
    expectTooLarge({ ...answer, body: JSON.parse(answer.body.toString("utf8")) });

    expect(await streamMessages(stream)).toBe(before);
    // Past ~1 MiB the body was already streaming into the Object Store: those chunks must be gone.
    await waitFor(async () => (await orphanChunks()) === 0, { what: "the partial upload's chunks to be purged" });
    expect((await liveObjects()).filter((n) => n.includes(".request"))).toEqual([]);
    expect(env.backend.callsTo(path)).toHaveLength(0);
  });

  it("accepts a body of exactly maxBodySize, chunked", async () => {
    const path = `/capped/${uniqueTag("exact")}`;
    const answer = await upload(path, binaryPattern(2 * MiB));
    expect(answer.status).toBe(202);
    const { id } = JSON.parse(answer.body.toString("utf8")) as { id: string };
    await waitFinal(id);
    const [call] = env.backend.callsTo(path);
    expect(call?.headers["content-length"]).toBe(String(2 * MiB));
    expect(call?.headers["transfer-encoding"]).toBeUndefined();
    expect(Buffer.compare(call?.body ?? Buffer.alloc(0), binaryPattern(2 * MiB))).toBe(0);
  });

  for (const framing of ["Content-Length", "chunked"] as const) {
    it(`leaves nothing behind when the client disconnects mid-body (${framing})`, async () => {
      // Earlier tests' request bodies are deleted after their jobs complete, in the background: let
      // that finish, so that counting chunks below sees this upload only.
      await waitFor(async () => (await liveObjects()).every((n) => !n.includes(".request")) && (await orphanChunks()) === 0, {
        what: "earlier request bodies to be deleted",
      });
      const before = await streamMessages(stream);
      const path = `/echo/${uniqueTag("abort")}`;
      const req = await startUpload(path, 2 * MiB, framing === "chunked" ? undefined : 5 * MiB);
      // The upload has reached the Object Store (past the inline part): chunks of an object not
      // finished yet. Cut it off there.
      await waitFor(async () => (await orphanChunks()) > 0, { what: "the upload to reach the Object Store" });
      req.destroy();

      await waitFor(async () => (await orphanChunks()) === 0, { what: "the partial upload's chunks to be purged" });
      expect(await streamMessages(stream)).toBe(before);
      expect((await liveObjects()).filter((n) => n.includes(".request"))).toEqual([]);
      expect(app.logs.filter((l) => l.msg === "job accepted" && l.route === "echo" && l.bodyBytes === 2 * MiB)).toEqual([]);

      // Still healthy: the same route takes the next request.
      const next = await app.submit("post", `${path}-next`, { body: Buffer.from("after the abort") });
      await waitFinal(next);
      expect(env.backend.callsTo(path)).toHaveLength(1); // the "-next" call only (same prefix)
    });
  }
});

// ---- response bodies --------------------------------------------------------------------------

describe("response bodies larger than a NATS message", () => {
  it("stores a 3 MiB response and replays exactly those bytes with Content-Length", async () => {
    const size = 3 * MiB;
    const id = await app.submit("get", `/binary?size=${size}&tag=${uniqueTag("resp")}`);
    const done = await waitFinal(id);
    expect(done.body).toMatchObject({ status: "completed", responseStatus: 201 });
    expect(await hasObject(id)).toBe(true);
    expect(await kvValue(`${stream}_results`, id)).toBeUndefined();

    const result = await app.resultBytes(id);
    expect(result.status).toBe(201);
    expect(result.headers["content-length"]).toBe(String(size));
    expect(result.headers["transfer-encoding"]).toBeUndefined();
    expect(result.headers["set-cookie"]).toEqual(["a=1; Path=/", "b=2; Path=/"]);
    expect(Buffer.compare(result.body as Buffer, binaryPattern(size))).toBe(0);

    const head = await request(app.url).head(`${JOBS}/${id}/result`);
    expect(head.status).toBe(201);
    expect(head.headers["content-length"]).toBe(String(size));
  });

  it("fails a job whose response exceeds maxResponseSize, without retrying or keeping anything", async () => {
    const path = `/binary?size=${2 * MiB}&tag=${uniqueTag("toolarge")}`;
    const id = await app.submit("post", path);
    const done = await waitFinal(id);
    expect(done.body).toMatchObject({
      status: "failed",
      attempts: 1,
      error: { code: "SLOWLANE_RESPONSE_TOO_LARGE" },
    });
    expect(done.body.responseStatus).toBeUndefined();

    const result = await app.result(id);
    expect(result.status).toBe(502);
    expect(result.headers["content-type"]).toBe("application/problem+json");
    expect(result.body).toMatchObject({ status: 502, code: "SLOWLANE_RESPONSE_TOO_LARGE" });

    expect(await kvValue(`${stream}_results`, id)).toBeUndefined();
    expect(await hasObject(id)).toBe(false);
    // Deleting an object marks it deleted before purging its chunks: wait out deletions in progress.
    await waitFor(async () => (await orphanChunks()) === 0, { what: "no chunk left without its object" });
    // Not retried (the route allows 3 attempts): the same answer would come back.
    expect(env.backend.callsTo(path)).toHaveLength(1);
  });

  it("fails a response over a maxResponseSize smaller than a message (it would have fitted in the results KV)", async () => {
    const path = `/binary?size=${600 * 1024}&tag=${uniqueTag("small-limit")}`;
    const res = await request(app.url).put(path);
    expect(res.status).toBe(202);
    const id = res.body.id as string;
    const done = await waitFinal(id);
    expect(done.body).toMatchObject({ status: "failed", attempts: 1, error: { code: "SLOWLANE_RESPONSE_TOO_LARGE" } });
    expect((await request(app.url).get(`${JOBS}/${id}/result`)).status).toBe(502);
    expect(await hasObject(id)).toBe(false);
    expect(await kvValue(`${stream}_results`, id)).toBeUndefined();
    expect(env.backend.callsTo(path)).toHaveLength(1);
  });
});

// ---- several at once ----------------------------------------------------------------------------

describe("several large jobs at once", () => {
  it("completes 5 jobs of 3 MiB requests and responses in flight together, each with its own bytes", async () => {
    const size = 3 * MiB;
    const tag = uniqueTag("many");
    const bodies = Array.from({ length: 5 }, (_, i) => patternFor(size, 100 + i));
    const ids = await Promise.all(bodies.map((body, i) => app.submit("post", `/echo/${tag}/${i}`, { body })));
    expect(new Set(ids).size).toBe(5);

    for (const [i, id] of ids.entries()) {
      const done = await waitFinal(id);
      expect(done.body).toMatchObject({ status: "completed", responseStatus: 200 });
      const result = await app.resultBytes(id);
      expect(result.status).toBe(200);
      expect(Number(result.headers["content-length"])).toBe((result.body as Buffer).byteLength);
      const echo = JSON.parse((result.body as Buffer).toString("utf8")) as { url: string; body: string };
      expect(echo.url).toBe(`/echo/${tag}/${i}`);
      expect(Buffer.compare(Buffer.from(echo.body, "base64"), bodies[i] as Buffer)).toBe(0);
    }
    for (const [i, body] of bodies.entries()) {
      const calls = env.backend.callsTo(`/echo/${tag}/${i}`);
      expect(calls).toHaveLength(1);
      expect(Buffer.compare(calls[0]?.body ?? Buffer.alloc(0), body)).toBe(0);
    }
    await waitFor(async () => (await liveObjects()).every((n) => !ids.some((id) => n.startsWith(`${id}.request`))), {
      what: "every request body to be deleted",
    });
    // Deleting an object marks it deleted before purging its chunks: wait out deletions in progress.
    await waitFor(async () => (await orphanChunks()) === 0, { what: "no chunk left without its object" });
  });

  // Concurrent uploads under one Idempotency-Key each stream into their own object `<id>.request.<suffix>`
  // before JetStream's Nats-Msg-Id keeps one message; the uploads whose publish was a duplicate delete
  // their own object, and the worker deletes the kept one once the job completes.
  it("leaves no orphan chunks when concurrent large uploads share one Idempotency-Key", async () => {
    const tag = uniqueTag("samekey");
    const body = patternFor(2 * MiB, 42);
    const answers = await Promise.all(
      Array.from({ length: 4 }, () =>
        request(app.url).post(`/echo/${tag}`).set("idempotency-key", tag).set("content-type", "application/octet-stream").send(body),
      ),
    );
    expect(answers.map((a) => a.status)).toEqual([202, 202, 202, 202]);
    const ids = new Set(answers.map((a) => a.body.id as string));
    expect(ids.size).toBe(1);
    const [id] = [...ids] as [string];
    await waitFinal(id);
    const calls = env.backend.callsTo(`/echo/${tag}`);
    expect(calls).toHaveLength(1);
    expect(Buffer.compare(calls[0]?.body ?? Buffer.alloc(0), body)).toBe(0);
    await waitFor(async () => !(await hasObject(`${id}.request`)), { what: "the request body to be deleted" });
    // Deleting an object marks it deleted before purging its chunks: wait out deletions in progress.
    await waitFor(async () => (await orphanChunks()) === 0, { what: "no chunk left without its object" });
  });
});
