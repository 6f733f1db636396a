/**
 * Spellings of a path that a backend reads as an async route's path: dot segments, percent-encoded
 * dots and letters, encoded slashes and backslashes, doubled slashes. Each must either be queued as
 * a job (202, and the backend later receives the normalised path from a worker) or be refused (400);
 * none may reach the backend synchronously. Ordinary passthrough paths are forwarded normalised.
 */
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsAndBackend } from "../helpers/environment.js";
import { uniqueTag, waitFinal } from "../helpers/jobs.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";
import { head, sendRaw } from "./raw-http.js";

const env = useNatsAndBackend();
let slowlane: TestApp;
let port: number;

beforeAll(async () => {
  slowlane = await startApp(
    makeConfig({
      listen: "127.0.0.1:0",
      upstream: env.backend.url,
      nats: { servers: env.nats.url, stream: uniqueStream("paths") },
      defaults: { attempts: 1, retryAfter: "1s" },
      routes: [
        { name: "reports", methods: ["POST"], path: "/reports/**" },
        { name: "daily", methods: ["POST"], path: "/daily" },
        { name: "pairs", methods: ["POST"], path: "/pairs/*/x" },
        { name: "feeds", methods: ["GET"], path: "/feeds/**" },
      ],
    }),
  );
  await slowlane.app.ready;
  port = Number(new URL(slowlane.url).port);
});

afterAll(async () => {
  await slowlane?.close();
});

const H = "Host: slowlane.test";

/** Sends `METHOD target` (with `?t=<tag>` appended) over a raw socket; returns the answer and the tag. */
async function send(method: string, target: string) {
  const tag = uniqueTag("trick");
  const sep = target.includes("?") ? "&" : "?";
  const raw = head(`${method} ${target}${sep}t=${tag} HTTP/1.1`, H, "Content-Length: 4") + "body";
  const exchange = await sendRaw(port, raw, { finalResponses: 1 });
  return { answer: exchange.last, tag };
}

/** The backend calls carrying `tag`, as "METHOD url". */
const callsWith = (tag: string) => env.backend.calls.filter((c) => c.url.includes(tag)).map((c) => `${c.method} ${c.url}`);

/** Proves the backend is reachable and has seen everything sent before: a passthrough probe arrives. */
async function probe(): Promise<void> {
  const tag = uniqueTag("probe");
  expect((await request(slowlane.url).get(`/probe?t=${tag}`)).status).toBe(200);
  expect(callsWith(tag)).toEqual([`GET /probe?t=${tag}`]);
}

describe("tricks on the async route /reports/** become jobs, forwarded under the normalised path", () => {
  it.each([
    ["a dot segment", "/./reports/q3", "/reports/q3"],
    ["an encoded dot segment (lower case)", "/%2e/reports/q3", "/reports/q3"],
    ["an encoded dot segment (upper case)", "/%2E/reports/q3", "/reports/q3"],
    ["a dot-dot segment back into the route", "/reports/../reports/q3", "/reports/q3"],
    ["a dot-dot segment from elsewhere", "/public/../reports/q3", "/reports/q3"],
    ["encoded dot-dot segments", "/reports/%2e%2E/reports/q3", "/reports/q3"],
    ["a half-encoded dot-dot segment", "/x/.%2e/reports/q3", "/reports/q3"],
    ["an encoded unreserved letter", "/%72eports/q3", "/reports/q3"],
    ["dot segments and a query that looks like a path", "/reports/./q3?next=/../admin", "/reports/q3?next=/../admin"],
    ["the absolute form", "http://evil.example/./reports/q3", "/reports/q3"],
    ["a trailing slash the route takes either way", "/reports/q3/", "/reports/q3/"],
  ])("%s: %s → 202, the backend gets %s from a worker", async (_name, target, forwarded) => {
    const { answer, tag } = await send("POST", target);
    expect(answer?.status).toBe(202);
    const { id } = JSON.parse(answer?.body.toString() ?? "{}") as { id: string };
    await waitFinal(slowlane.url, id);
    const sep = forwarded.includes("?") ? "&" : "?";
    expect(callsWith(tag)).toEqual([`POST ${forwarded}${sep}t=${tag}`]);
  });
});

describe("paths slowlane cannot route safely: 400 problem+json, nothing forwarded or queued", () => {
  it.each([
    ["an encoded slash", "/reports%2Fq3"],
    ["an encoded slash (lower case)", "/reports%2fq3"],
    ["an encoded backslash", "/reports%5Cq3"],
    ["a backslash", "/reports\\q3"],
    ["dot segments above the root", "/../reports/q3"],
    ["dot segments above the root, later", "/reports/../../reports/q3"],
    ["encoded dot segments above the root", "/%2e%2e/reports/q3"],
    ["a doubled slash that hides the route", "//reports/q3"],
    ["a doubled slash and dot segments together", "/a//../reports/q3"],
    ["a trailing slash that hides an exact route", "/daily/"],
    ["a doubled slash that a glob reads as a segment", "/pairs//x"],
    ["a malformed percent-escape", "/reports/%zz"],
    ["a fragment", "/reports/q3#x"],
  ])("%s: %s", async (_name, target) => {
    const accepted = slowlane.logs.filter((l) => l.msg === "job accepted").length;
    const { answer, tag } = await send("POST", target);
    expect(answer?.status).toBe(400);
    expect(answer?.headers["content-type"]).toBe("application/problem+json");
    expect(JSON.parse(answer?.body.toString() ?? "{}")).toMatchObject({ status: 400, code: "SLOWLANE_BAD_REQUEST" });
    await probe();
    expect(callsWith(tag)).toEqual([]);
    expect(slowlane.logs.filter((l) => l.msg === "job accepted").length).toBe(accepted);
  });
});

describe("passthrough paths", () => {
  it.each([
    ["dot segments, normalised", "GET", "/items/./a/../1", "/items/1"],
    ["encoded unreserved characters, decoded", "GET", "/%69tems/%7Euser", "/items/~user"],
    ["other escapes kept, hex upper-cased", "GET", "/items/caf%c3%a9%20x", "/items/caf%C3%A9%20x"],
    ["a doubled slash that matches no route either way, kept", "GET", "/items//1", "/items//1"],
    ["a method no route lists, doubled slash kept", "GET", "//reports/q3", "//reports/q3"],
    ["a trailing slash no route cares about, kept", "GET", "/items/1/", "/items/1/"],
  ])("%s: %s %s → %s", async (_name, method, target, forwarded) => {
    const { answer, tag } = await send(method, target);
    expect(answer?.status).toBe(200);
    expect(callsWith(tag)).toEqual([`${method} ${forwarded}?t=${tag}`]);
  });

  it("the jobs endpoints are found under a dot-segment spelling too", async () => {
    const exchange = await sendRaw(port, head("GET /./_slowlane/jobs/../jobs/not-an-id HTTP/1.1", H), { finalResponses: 1 });
    expect(exchange.last?.status).toBe(404);
    expect(JSON.parse(exchange.last?.body.toString() ?? "{}")).toMatchObject({ code: "SLOWLANE_JOB_NOT_FOUND" });
  });
});

describe("WebSocket upgrades on an async route's path", () => {
  it.each([
    ["as sent", "/feeds/live"],
    ["with a dot segment", "/./feeds/live"],
    ["with an encoded letter", "/%66eeds/live"],
  ])("%s (%s) → 400, never tunnelled to the backend past the queue", async (_name, target) => {
    const tag = uniqueTag("ws");
    const raw = head(
      `GET ${target}?t=${tag} HTTP/1.1`,
      H,
      "Connection: Upgrade",
      "Upgrade: websocket",
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    );
    const exchange = await sendRaw(port, raw, { finalResponses: 1 });
    expect(exchange.last?.status).toBe(400);
    expect(JSON.parse(exchange.last?.body.toString() ?? "{}")).toMatchObject({ code: "SLOWLANE_BAD_REQUEST" });
    await probe();
    expect(callsWith(tag)).toEqual([]);
  });
});
