/**
 * Malformed and hostile job ids on the jobs endpoints (GET, HEAD, DELETE), invalid UTF-8 and NUL
 * bytes in their paths, and 10,000 random well-formed ids: never anything but a 404 (or the
 * parser's 400 for bytes HTTP forbids), never a 5xx, nothing sent to the backend, and the real
 * job next to them untouched.
 */
import { randomBytes } from "node:crypto";
import request from "supertest";
import { beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { useJetStreamInspector } from "../helpers/jetstream.js";
import { JOBS } from "../helpers/jobs.js";
import { uniqueStream } from "../helpers/slowlane.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { head, parseResponses, sendRaw } from "./raw-http.js";

const env = useNatsAndBackend();
const { streamMessages } = useJetStreamInspector(env);
const stream = uniqueStream("jobids");
const slowlane = useSlowlane({
  environment: env,
  role: "proxy",
  config: { nats: { stream } },
  routes: [{ name: "jobs", methods: ["POST"], path: "/async/**" }],
});
let port: number;
/** A real queued job (no workers run here): it must still be there after every case. */
let realId: string;

beforeAll(async () => {
  port = Number(new URL(slowlane.url).port);
  const res = await request(slowlane.url).post("/async/real").send("real job");
  expect(res.status).toBe(202);
  realId = res.body.id as string;
});

/** The process still answers passthrough and the status of the real job; the backend saw only the probe. */
async function expectUntouched(backendCallsBefore: number): Promise<void> {
  const probe = await request(slowlane.url).get("/healthy");
  expect(probe.status).toBe(200);
  const status = await request(slowlane.url).get(`${JOBS}/${realId}`);
  expect(status.status).toBe(202);
  expect(status.body).toMatchObject({ id: realId, status: "queued" });
  expect(env.backend.calls.slice(backendCallsBefore).map((c) => `${c.method} ${c.url}`)).toEqual(["GET /healthy"]);
  expect(await streamMessages(stream)).toBe(1);
}

/** Ids as they appear in the request line: already percent-encoded where they need to be. */
const HOSTILE_IDS: [string, string][] = [
  ["..", ".."],
  ["%2e%2e", "%2e%2e"],
  ["..%2F..%2Fetc%2Fpasswd", "..%2F..%2Fetc%2Fpasswd"],
  ["../../etc/passwd", "../../etc/passwd"],
  ["NATS wildcard *", "*"],
  ["NATS wildcard >", ">"],
  ["a subject", "SLOWLANE.jobs.jobs.%3E"],
  ["id.with.dots", "id.with.dots"],
  ["22 characters with a dot", "AAAAAAAAAAAAAAAAAAAA.A"],
  ["22 characters of plain base64", "AAAAAAAAAAAAAAAAAAAA+/"],
  ["21 characters", "A".repeat(21)],
  ["23 characters", "A".repeat(23)],
  ["a well-formed id and a trailing space", `${"A".repeat(22)}%20`],
  ["a well-formed id and a NUL", `${"A".repeat(22)}%00`],
  ["very long (5,000)", "x".repeat(5_000)],
  ["unicode, percent-encoded", encodeURIComponent("é".repeat(11))],
  ["unicode lookalikes of 22 characters", encodeURIComponent("Ａ".repeat(22))],
  ["%00", "%00"],
  ["invalid UTF-8 %C3%28", "%C3%28"],
  ["overlong UTF-8 %C0%AE%C0%AE", "%C0%AE%C0%AE"],
  ["empty", ""],
];

describe("hostile job ids: 404 problem+json on every method, nothing reaches NATS or the backend", () => {
  it.each(HOSTILE_IDS)("%s", async (_name, id) => {
    const calls = env.backend.calls.length;
    for (const [method, path] of [
      ["GET", `${JOBS}/${id}`],
      ["HEAD", `${JOBS}/${id}`],
      ["DELETE", `${JOBS}/${id}`],
      ["GET", `${JOBS}/${id}/result`],
    ] as const) {
      const exchange = await sendRaw(port, head(`${method} ${path} HTTP/1.1`, "Host: slowlane.test"), {
        finalResponses: 1,
        headRequests: [method === "HEAD"],
      });
      const answer = exchange.last;
      expect(answer?.status, `${method} ${path}`).toBe(404);
      expect(answer?.headers["content-type"]).toBe("application/problem+json");
      if (method !== "HEAD") expect(JSON.parse(answer?.body.toString() ?? "")).toMatchObject({ code: "SLOWLANE_JOB_NOT_FOUND" });
    }
    await expectUntouched(calls);
  });

  it("an unknown well-formed id: 404 on GET, HEAD, DELETE and the result", async () => {
    const calls = env.backend.calls.length;
    const id = randomBytes(16).toString("base64url");
    for (const res of [
      await request(slowlane.url).get(`${JOBS}/${id}`),
      await request(slowlane.url).head(`${JOBS}/${id}`),
      await request(slowlane.url).delete(`${JOBS}/${id}`),
      await request(slowlane.url).get(`${JOBS}/${id}/result`),
    ]) {
      expect(res.status).toBe(404);
      expect(res.headers["content-type"]).toBe("application/problem+json");
    }
    await expectUntouched(calls);
  });
});

describe("bytes HTTP forbids in a jobs path: the parser's 400, connection closed", () => {
  it.each([
    ["a raw NUL byte", Buffer.from(head(`GET ${JOBS}/\x00 HTTP/1.1`, "Host: x"), "latin1")],
    ["a raw 0xff byte", Buffer.from(head(`GET ${JOBS}/\xff HTTP/1.1`, "Host: x"), "latin1")],
    ["raw UTF-8", Buffer.from(head(`DELETE ${JOBS}/${"é".repeat(11)} HTTP/1.1`, "Host: x"), "utf8")],
    ["a raw space in the id", Buffer.from(head(`HEAD ${JOBS}/AAAA AAAA HTTP/1.1`, "Host: x"), "latin1")],
  ])("%s", async (_name, raw) => {
    const calls = env.backend.calls.length;
    const exchange = await sendRaw(port, raw);
    expect(exchange.responses.map((r) => r.status)).toEqual([400]);
    expect(exchange.closed).toBe(true);
    await expectUntouched(calls);
  });
});

describe("10,000 random well-formed status ids", () => {
  it("all 404, over a few kept-alive connections", async () => {
    const calls = env.backend.calls.length;
    const connections = 20;
    const perConnection = 500;
    const answers = await Promise.all(
      Array.from({ length: connections }, async () => {
        const ids = Array.from({ length: perConnection }, () => randomBytes(16).toString("base64url"));
        // Pipelined: every request written at once, answers read in order on the same connection.
        const raw = ids.map((id) => head(`GET ${JOBS}/${id} HTTP/1.1`, "Host: slowlane.test")).join("");
        // A generous silence limit: a busy machine may be slow, only a stalled connection is wrong.
        const exchange = await sendRaw(port, raw, { finalResponses: perConnection, idleMs: 30_000 });
        return parseResponses(exchange.raw).map((r) => r.status);
      }),
    );
    const tally: Record<number, number> = {};
    for (const status of answers.flat()) tally[status] = (tally[status] ?? 0) + 1;
    expect(tally).toEqual({ 404: connections * perConnection });
    await expectUntouched(calls);
  });
});
