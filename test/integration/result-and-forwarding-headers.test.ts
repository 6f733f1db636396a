/**
 * Smaller holes of the trust review, through real HTTP: results are served with
 * `X-Content-Type-Options: nosniff` and the route's `resultHeaders`; `X-Forwarded-*` reach the
 * backend of an async request exactly as they reach it through passthrough (appended, not
 * replaced); a route without `methods` leaves OPTIONS (CORS preflights) to passthrough.
 */
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { fetchResult, JOBS, uniqueTag, waitFinal } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const env = useNatsAndBackend();
let app: TestApp;

beforeAll(async () => {
  app = await startApp(
    makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream: uniqueStream("holes"), ackWait: "2s" },
      defaults: { timeout: "10s", ttl: "5m", attempts: 1, retryAfter: "1s" },
      routes: [
        { name: "sandboxed", methods: ["POST"], path: "/reply/sandboxed", resultHeaders: { "content-security-policy": "sandbox", "x-reply": "from the route" } },
        { name: "failing", methods: ["POST"], path: "/reply/failing", retryOn: [503] },
        { name: "echo", methods: ["POST"], path: "/echo/async/**" },
        { name: "any", path: "/any/**" },
        { name: "preflight", methods: ["POST", "OPTIONS"], path: "/preflight/**" },
      ],
    }),
  );
  await app.app.ready;
});
afterAll(async () => {
  await app?.close();
});

async function run(path: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await request(app.url).post(path).set(headers).send("x");
  expect(res.status, res.text).toBe(202);
  const id = res.body.id as string;
  await waitFinal(app.url, id);
  return id;
}

describe("result answers", () => {
  it("carry nosniff and the route's resultHeaders, which replace the backend's of the same name", async () => {
    const id = await run(`/reply/sandboxed?size=20`, { "x-reply-marker": "<script>alert(1)</script>" });
    for (const res of [await fetchResult(app.url, id), await request(app.url).head(`${JOBS}/${id}/result`)]) {
      expect(res.status).toBe(200);
      expect(res.headers["x-content-type-options"]).toBe("nosniff");
      expect(res.headers["content-security-policy"]).toBe("sandbox");
      expect(res.headers["x-reply"]).toBe("from the route");
      expect(res.headers["set-cookie"]).toEqual(["session=<script>alert(1)</script>; HttpOnly"]);
    }
  });

  it("carry nosniff on a failed job's problem too, and never an internal address", async () => {
    const id = await run(`/reply/failing?status=503`);
    const res = await fetchResult(app.url, id);
    expect(res.status).toBe(502);
    expect(res.headers["x-content-type-options"]).toBe("nosniff");
    expect((res.body as Buffer).toString()).not.toContain("127.0.0.1");
  });
});

describe("X-Forwarded-* on async requests", () => {
  /** The X-Forwarded-* headers the backend got for the last call to `url`. */
  function forwardedOf(url: string): Record<string, unknown> {
    const call = env.backend.calls.filter((c) => c.url === url).at(-1);
    return Object.fromEntries(Object.entries(call?.headers ?? {}).filter(([name]) => name.startsWith("x-forwarded-")));
  }

  for (const [label, sent] of [
    ["when the client sent none", {}],
    ["appended to what the client sent", { "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https", "x-forwarded-port": "443", "x-forwarded-host": "public.example" }],
  ] as const) {
    it(`are what passthrough sends, ${label}`, async () => {
      const tag = uniqueTag("xfwd");
      const viaPassthrough = await request(app.url).post(`/echo/pass?tag=${tag}`).set(sent).send("x");
      expect(viaPassthrough.status).toBe(200);
      await run(`/echo/async?tag=${tag}`, sent);
      const passthrough = forwardedOf(`/echo/pass?tag=${tag}`);
      const async = forwardedOf(`/echo/async?tag=${tag}`);
      expect(Object.keys(passthrough).sort()).toEqual(["x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto"]);
      expect(async).toEqual(passthrough);
      if ("x-forwarded-for" in sent) {
        expect(async).toMatchObject({ "x-forwarded-for": "203.0.113.9,127.0.0.1", "x-forwarded-proto": "https,http", "x-forwarded-host": "public.example" });
      }
    });
  }
});

describe("OPTIONS", () => {
  it("passes through on a route without methods (a CORS preflight is answered at once)", async () => {
    const tag = uniqueTag("preflight");
    const res = await request(app.url).options(`/any/x?tag=${tag}`).set("origin", "https://app.example").set("access-control-request-method", "POST");
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ method: "OPTIONS", url: `/any/x?tag=${tag}` });
    expect(res.headers.location).toBeUndefined();
    // Other methods on the same route are still async.
    expect((await request(app.url).get(`/any/x?tag=${tag}`)).status).toBe(202);
  });

  it("is async on a route that lists it", async () => {
    const tag = uniqueTag("listed");
    const res = await request(app.url).options(`/preflight/x?tag=${tag}`);
    expect(res.status).toBe(202);
    await waitFor(() => env.backend.callsTo(`/preflight/x?tag=${tag}`).length === 1, { what: "the queued OPTIONS" });
  });
});
