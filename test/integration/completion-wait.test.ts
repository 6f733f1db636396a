/**
 * Sync when fast, async when slow (RFC 7240): a route's `wait`, `Prefer: wait=N`, `Prefer:
 * respond-async`, `async: prefer`, `Preference-Applied` and `Content-Location`, through real HTTP,
 * a real nats-server and a real backend. Answers are compared as the bytes the client receives.
 */
import { request as httpRequest } from "node:http";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { JOBS, uniqueTag, waitFinal } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";

const env = useNatsAndBackend();
let slowlane: TestApp;

beforeAll(async () => {
  const config = makeConfig({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream: uniqueStream("wait"), ackWait: "5s" },
    defaults: { timeout: "20s", ttl: "5m", attempts: 1, concurrency: 8, retryAfter: "1s" },
    routes: [
      { name: "waits", methods: ["POST"], path: "/slow", wait: "3s" },
      { name: "plain", methods: ["POST"], path: "/echo/**" },
      { name: "failing", methods: ["POST"], path: "/fail", wait: "3s" },
      { name: "optin", methods: ["POST"], path: "/optin/**", async: "prefer" },
    ],
  });
  slowlane = await startApp(config);
  await slowlane.app.ready;
});

afterAll(async () => {
  await slowlane?.close();
});

interface RawAnswer {
  status: number;
  /** Header lines as received, in order, names as sent. */
  rawHeaders: string[];
  body: Buffer;
}

/** One request over a fresh connection, keeping the answer as received. */
function raw(base: string, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { method, headers: { connection: "close", ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

function header(answer: RawAnswer, name: string): string | undefined {
  const i = answer.rawHeaders.findIndex((h, n) => n % 2 === 0 && h.toLowerCase() === name);
  return i === -1 ? undefined : answer.rawHeaders[i + 1];
}

function without(answer: RawAnswer, name: string): string[] {
  const kept: string[] = [];
  for (let i = 0; i < answer.rawHeaders.length; i += 2) {
    if ((answer.rawHeaders[i] as string).toLowerCase() !== name) kept.push(answer.rawHeaders[i] as string, answer.rawHeaders[i + 1] as string);
  }
  return kept;
}

const idOf = (location: string | undefined): string => (location ?? "").slice(JOBS.length + 1);

describe("route wait: synchronous when the job is fast, 202 when it is slow", () => {
  it("replays a fast job's answer at once, byte for byte what its result URL answers, plus Content-Location", async () => {
    const tag = uniqueTag("fast");
    const sync = await raw(slowlane.url, "POST", `/slow?ms=0&tag=${tag}`, { "content-type": "text/plain" }, "hello");
    expect(sync.status).toBe(200);
    const location = header(sync, "content-location");
    expect(location).toMatch(new RegExp(`^${JOBS}/[A-Za-z0-9_-]{28}$`));
    expect(header(sync, "preference-applied")).toBeUndefined();
    expect(JSON.parse(sync.body.toString())).toEqual({ method: "POST", url: `/slow?ms=0&tag=${tag}`, bodyBytes: 5 });

    const result = await raw(slowlane.url, "GET", `${location}/result`);
    expect(result.status).toBe(sync.status);
    expect(without(sync, "content-location")).toEqual(result.rawHeaders);
    expect(sync.body.equals(result.body)).toBe(true);
    // The backend's own answer to the same request has the same body.
    const direct = await raw(env.backend.url, "POST", `/slow?ms=0&tag=${tag}`, { "content-type": "text/plain" }, "hello");
    expect(sync.body.equals(direct.body)).toBe(true);
  });

  it("answers a slow job 202 after the wait, and its result is the backend's answer, byte for byte", async () => {
    const tag = uniqueTag("slow");
    const accepted = await raw(slowlane.url, "POST", `/slow?ms=4500&tag=${tag}`, { "content-type": "text/plain" }, "hello");
    expect(accepted.status).toBe(202);
    const location = header(accepted, "location");
    expect(header(accepted, "content-location")).toBeUndefined();
    expect(header(accepted, "preference-applied")).toBeUndefined();
    expect(JSON.parse(accepted.body.toString())).toEqual({ id: idOf(location), status: "queued", statusUrl: location });
    // Only the one backend call: the wait did not call it again.
    expect(env.backend.callsTo(`/slow?ms=4500&tag=${tag}`)).toHaveLength(1);

    await waitFinal(slowlane.url, idOf(location));
    const result = await raw(slowlane.url, "GET", `${location}/result`);
    const direct = await raw(env.backend.url, "POST", `/slow?ms=0&tag=${tag}`, { "content-type": "text/plain" }, "hello");
    expect(result.status).toBe(200);
    expect(JSON.parse(result.body.toString())).toEqual({ ...JSON.parse(direct.body.toString()), url: `/slow?ms=4500&tag=${tag}` });
  });

  it("replays a failed job's problem synchronously too, as its result URL answers it", async () => {
    const sync = await raw(slowlane.url, "POST", "/fail");
    expect(sync.status).toBe(500);
    expect(sync.body.toString()).toBe("backend exploded");
    expect(header(sync, "content-location")).toMatch(new RegExp(`^${JOBS}/`));
  });
});

describe("Prefer (RFC 7240)", () => {
  it("wait=N makes a route without a wait synchronous, with Preference-Applied", async () => {
    const res = await request(slowlane.url).post("/echo/prefer").set("prefer", "wait=10").send("x");
    expect(res.status).toBe(200);
    expect(res.headers["preference-applied"]).toBe("wait=10");
    expect(res.headers["content-location"]).toMatch(new RegExp(`^${JOBS}/`));
    expect(res.body).toMatchObject({ method: "POST", url: "/echo/prefer" });
  });

  it("wait=N lower than the route's answers 202 when the job takes longer", async () => {
    const res = await request(slowlane.url).post("/slow?ms=3000").set("prefer", "wait=1");
    expect(res.status).toBe(202);
    expect(res.headers["preference-applied"]).toBeUndefined();
    expect(res.headers["content-location"]).toBeUndefined();
    await waitFinal(slowlane.url, res.body.id as string);
  });

  it("respond-async alone means no wait: 202 at once, with Preference-Applied", async () => {
    const tag = uniqueTag("async");
    const res = await request(slowlane.url).post(`/slow?ms=1500&tag=${tag}`).set("prefer", "respond-async");
    expect(res.status).toBe(202);
    expect(res.headers["preference-applied"]).toBe("respond-async");
    const status = await request(slowlane.url).get(res.headers.location as string).redirects(0);
    // Answered before the job could finish: the wait of the route did not apply.
    expect(status.status).toBe(202);
    await waitFinal(slowlane.url, res.body.id as string);
  });

  it("respond-async with wait=N waits (the wait applies), in any case and spacing", async () => {
    const res = await request(slowlane.url).post("/echo/both").set("prefer", 'Respond-Async ; x=1,  WAIT="5"');
    expect(res.status).toBe(200);
    expect(res.headers["preference-applied"]).toBe("wait=5");
  });

  it("caps wait at 60 s and ignores values that are not whole seconds", async () => {
    const capped = await request(slowlane.url).post("/echo/capped").set("prefer", "wait=3600");
    expect(capped.status).toBe(200);
    expect(capped.headers["preference-applied"]).toBe("wait=60");
    const junk = await request(slowlane.url).post("/echo/junk").set("prefer", "wait=soon");
    expect(junk.status).toBe(202);
    expect(junk.headers["preference-applied"]).toBeUndefined();
    await waitFinal(slowlane.url, junk.body.id as string);
  });

  it("async: prefer passes a request through unless it asks for respond-async", async () => {
    const tag = uniqueTag("optin");
    const sync = await request(slowlane.url).post(`/optin/x?tag=${tag}`).send("y");
    expect(sync.status).toBe(200);
    expect(sync.headers["content-location"]).toBeUndefined();
    expect(sync.headers["preference-applied"]).toBeUndefined();
    expect(sync.body).toEqual({ method: "POST", url: `/optin/x?tag=${tag}` });

    const job = await request(slowlane.url).post(`/optin/y?tag=${tag}`).set("prefer", "respond-async").send("y");
    expect(job.status).toBe(202);
    expect(job.headers["preference-applied"]).toBe("respond-async");
    await waitFinal(slowlane.url, job.body.id as string);
    expect(env.backend.callsTo(`/optin/y?tag=${tag}`)).toHaveLength(1);
  });
});
