/**
 * The whole async request-reply flow through real HTTP, a real nats-server and a real backend:
 * 202 → poll → 303 → result, exact replay, failures, hostile ids, expiry and passthrough.
 */
import { request as httpRequest } from "node:http";
import type { Socket } from "node:net";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { binaryPattern } from "../helpers/backend.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { JOBS } from "../helpers/jobs.js";
import type { Method } from "../helpers/jobs.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
const slowlane = useSlowlane({
  environment: env,
  stream: "flow",
  config: {
    nats: { ackWait: "2s" },
    defaults: { timeout: "10s", ttl: "5m", attempts: 1, concurrency: 8, retryAfter: "1s" },
  },
  routes: [
    { name: "slow", methods: ["POST"], path: "/slow", maxBodySize: "1MiB" },
    { name: "binary", methods: ["GET"], path: "/binary" },
    { name: "fail", path: "/fail" },
    { name: "echo", path: "/echo/**" },
    { name: "hang", methods: ["POST"], path: "/hang", timeout: "300ms", attempts: 2 },
    { name: "brief", path: "/brief/*", ttl: "1s" },
  ],
});

/** Submits a job and returns its id, checking the whole 202 contract on the way (this file is its test). */
async function submit(method: Method, path: string, body?: Buffer | string): Promise<string> {
  const res = await slowlane.send(method, path, { body });
  expect(res.status).toBe(202);
  const id = res.body.id as string;
  expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
  expect(res.headers.location).toBe(`${JOBS}/${id}`);
  expect(res.headers["retry-after"]).toBe("1");
  expect(res.body).toEqual({ id, status: "queued", statusUrl: `${JOBS}/${id}` });
  return id;
}

const { waitFinal } = slowlane;

describe("accept → poll → 303 → result", () => {
  it("answers 202 at once, 202 while pending, then 303 to the replayed result", async () => {
    const id = await submit("post", "/slow?ms=700", "hello backend");

    const pending = await slowlane.status(id);
    expect(pending.status).toBe(202);
    expect(pending.headers["retry-after"]).toBe("1");
    expect(["queued", "running"]).toContain(pending.body.status);
    expect(pending.body).toMatchObject({ id, route: "slow" });
    expect(Date.parse(pending.body.createdAt as string)).not.toBeNaN();

    const pendingResult = await slowlane.result(id).redirects(0);
    expect(pendingResult.status).toBe(202);

    const done = await waitFinal(id);
    expect(done.headers.location).toBe(`${JOBS}/${id}/result`);
    expect(done.body).toMatchObject({ id, status: "completed", route: "slow", attempts: 1, responseStatus: 200 });

    const result = await slowlane.result(id);
    expect(result.status).toBe(200);
    expect(result.body).toEqual({ method: "POST", url: "/slow?ms=700", bodyBytes: "hello backend".length });

    // A client that follows redirects on the status URL gets the result directly.
    const followed = await request(slowlane.url).get(`${JOBS}/${id}`).redirects(1);
    expect(followed.status).toBe(200);
    expect(followed.body).toEqual(result.body);
  });

  it("replays status, headers and binary bytes exactly: in the record, in the KV, in the Object Store", async () => {
    // 8 KiB rides in the job record itself, 300 kB goes to the results KV, 3 MiB to the Object Store.
    for (const size of [8 * 1024, 300_000, 3 * 1024 * 1024]) {
      const id = await submit("get", `/binary?size=${size}`);
      await waitFinal(id);
      const res = await slowlane.resultBytes(id);
      expect(res.status).toBe(201);
      expect(res.headers["content-type"]).toBe("application/octet-stream");
      expect(res.headers["x-custom"]).toBe("kept");
      expect(res.headers["set-cookie"]).toEqual(["a=1; Path=/", "b=2; Path=/"]);
      expect(Number(res.headers["content-length"])).toBe(size);
      expect(Buffer.compare(res.body as Buffer, binaryPattern(size))).toBe(0);
    }
  });

  it("keeps the request whole: method, path, query, headers (minus hop-by-hop) and body bytes", async () => {
    const body = Buffer.from([0, 1, 2, 255, 254, 0, 10, 13]);
    const res = await request(slowlane.url)
      .put("/echo/a/b?x=1&y=%20two")
      .set("content-type", "application/octet-stream")
      .set("x-custom", "value")
      .set("connection", "keep-alive, x-drop-me")
      .set("x-drop-me", "secret-hop")
      .send(body);
    expect(res.status).toBe(202);
    await waitFinal(res.body.id as string);
    const result = await slowlane.result(res.body.id as string);
    const echo = result.body as { method: string; url: string; headers: Record<string, string>; body: string };
    expect(echo.method).toBe("PUT");
    expect(echo.url).toBe("/echo/a/b?x=1&y=%20two");
    expect(echo.headers["x-custom"]).toBe("value");
    expect(echo.headers["content-type"]).toBe("application/octet-stream");
    expect(echo.headers["x-drop-me"]).toBeUndefined();
    expect(echo.headers["x-forwarded-for"]).toMatch(/127\.0\.0\.1/);
    expect(echo.headers["x-forwarded-proto"]).toBe("http");
    expect(Buffer.from(echo.body, "base64")).toEqual(body);
  });

  it("replays a backend 500 as a result, not an error of ours", async () => {
    const id = await submit("post", "/fail");
    const done = await waitFinal(id);
    expect(done.body).toMatchObject({ status: "completed", responseStatus: 500, attempts: 1 });
    const result = await slowlane.result(id);
    expect(result.status).toBe(500);
    expect(result.text).toBe("backend exploded");
    expect(result.headers["x-error"]).toBe("boom");
    expect(env.backend.callsTo("/fail")).toHaveLength(1);
  });

  it("retries a timed-out call, then fails the job and answers 504", async () => {
    const before = env.backend.callsTo("/hang").length;
    const id = await submit("post", "/hang");
    const done = await waitFinal(id);
    expect(done.body).toMatchObject({ status: "failed", attempts: 2, error: { code: "SLOWLANE_UPSTREAM_TIMEOUT" } });
    expect(env.backend.callsTo("/hang").length - before).toBe(2);
    const result = await slowlane.result(id);
    expect(result.status).toBe(504);
    expect(result.headers["content-type"]).toBe("application/problem+json");
    expect(result.body).toMatchObject({ status: 504, code: "SLOWLANE_UPSTREAM_TIMEOUT" });
  });

  it("logs one line per job transition with id, route and attempt", async () => {
    const id = await submit("post", "/slow?ms=0");
    await waitFinal(id);
    const lines = slowlane.logs.filter((l) => l.job === id);
    expect(lines.map((l) => l.msg)).toEqual(["job accepted", "job started", "job completed"]);
    expect(lines[1]).toMatchObject({ route: "slow", attempt: 1 });
    expect(typeof lines[2]?.durationMs).toBe("number");
  });
});

describe("request bodies", () => {
  it("refuses a body over the route's maxBodySize with 413 before queueing anything", async () => {
    const before = env.backend.callsTo("/slow?ms=0&tag=big").length;
    const res = await request(slowlane.url)
      .post("/slow?ms=0&tag=big")
      .set("content-type", "application/octet-stream")
      .send(Buffer.alloc(1024 * 1024 + 1));
    expect(res.status).toBe(413);
    expect(res.headers["content-type"]).toBe("application/problem+json");
    expect(res.body.code).toBe("SLOWLANE_BODY_TOO_LARGE");
    expect(slowlane.logs.filter((l) => l.msg === "job accepted" && l.bodyBytes === 1024 * 1024 + 1)).toHaveLength(0);
    // The process is healthy and the route still accepts.
    const ok = await request(slowlane.url).post("/slow?ms=0&tag=big").send("small");
    expect(ok.status).toBe(202);
    await waitFinal(ok.body.id as string);
    expect(env.backend.callsTo("/slow?ms=0&tag=big").length - before).toBe(1);
  });
});

describe("job ids", () => {
  it("answers 404 for unknown, malformed and hostile ids, never 5xx", async () => {
    const hostile = [
      "AAAAAAAAAAAAAAAAAAAAAA",
      "..%2F..%2Fetc%2Fpasswd",
      "x".repeat(5000),
      "*",
      ">",
      "a.b.c",
      "SLOWLANE.jobs.%3E",
      "%00",
      "AAAAAAAAAAAAAAAAAAAAAA/result/extra",
      "",
    ];
    for (const id of hostile) {
      const res = await request(slowlane.url).get(`${JOBS}/${id}`);
      expect(res.status, id).toBe(404);
      expect(res.headers["content-type"]).toBe("application/problem+json");
      expect(res.body.code).toBe("SLOWLANE_JOB_NOT_FOUND");
    }
    const bare = await request(slowlane.url).get(JOBS);
    expect(bare.status).toBe(404);
  });

  it("answers 405 with Allow for methods other than GET, HEAD and DELETE (GET and HEAD on a result)", async () => {
    const id = await submit("post", "/slow?ms=0");
    const res = await request(slowlane.url).post(`${JOBS}/${id}`);
    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe("GET, HEAD, DELETE");
    const result = await request(slowlane.url).delete(`${JOBS}/${id}/result`);
    expect(result.status).toBe(405);
    expect(result.headers.allow).toBe("GET, HEAD");
  });

  it("forgets a job after its ttl: 410 while the record remains", async () => {
    const id = await submit("get", "/brief/x");
    await waitFinal(id);
    const gone = await waitFor(
      async () => {
        const res = await slowlane.status(id);
        return res.status === 410 ? res : undefined;
      },
      { what: "the job to expire" },
    );
    expect(gone.body.code).toBe("SLOWLANE_JOB_EXPIRED");
    const result = await slowlane.result(id);
    expect(result.status).toBe(410);
  });
});

describe("passthrough", () => {
  it("passes unmatched requests through synchronously, with X-Forwarded-*", async () => {
    const res = await request(slowlane.url).get("/echo-not-routed?q=1").set("x-custom", "v");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ method: "GET", url: "/echo-not-routed?q=1" });
    const call = env.backend.callsTo("/echo-not-routed").at(-1);
    expect(call?.headers["x-forwarded-for"]).toMatch(/127\.0\.0\.1/);
    expect(call?.headers["x-custom"]).toBe("v");
  });

  it("passes through a method the route does not list", async () => {
    const res = await request(slowlane.url).get("/slow?ms=0");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ method: "GET", url: "/slow?ms=0", bodyBytes: 0 });
  });

  it("passes WebSocket upgrades through and relays bytes both ways", async () => {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const req = httpRequest(`${slowlane.url}/ws`, { headers: { connection: "Upgrade", upgrade: "websocket" } });
      req.on("upgrade", (res, s: Socket) => {
        expect(res.statusCode).toBe(101);
        resolve(s);
      });
      req.on("response", (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
      req.on("error", reject);
      req.end();
    });
    const echoed = new Promise<string>((resolve) => socket.once("data", (d: Buffer) => resolve(d.toString())));
    socket.write("ping through slowlane");
    expect(await echoed).toBe("ping through slowlane");
    socket.destroy();
  });
});
