/** RFC 7240 `Prefer` as slowlane reads it, the wait an accept applies, and the estimate's Retry-After. */
import { describe, expect, it } from "vitest";
import type { RouteConfig } from "../../src/config/index.js";
import { makeConfig } from "../helpers/slowlane.js";
import { toRetryAfterS } from "../../src/proxy/estimate.js";
import { isAsyncRequest, parsePrefer, toAcceptWait } from "../../src/proxy/prefer.js";
import { toEventId } from "../../src/proxy/status-stream.js";

const config = makeConfig({
  routes: [
    { name: "plain", path: "/plain" },
    { name: "waits", path: "/waits", wait: "5s" },
    { name: "optin", path: "/optin", async: "prefer" },
  ],
});
const [plain, waits, optin] = config.routes as [RouteConfig, RouteConfig, RouteConfig];

describe("parsePrefer", () => {
  it("reads respond-async and wait=N, in any case, with parameters and quotes", () => {
    expect(parsePrefer({})).toEqual({ respondAsync: false, waitMs: undefined });
    expect(parsePrefer({ prefer: "respond-async" })).toEqual({ respondAsync: true, waitMs: undefined });
    expect(parsePrefer({ prefer: "wait=10" })).toEqual({ respondAsync: false, waitMs: 10_000 });
    expect(parsePrefer({ prefer: 'RESPOND-ASYNC; foo=bar, Wait="7"' })).toEqual({ respondAsync: true, waitMs: 7_000 });
    expect(parsePrefer({ prefer: "return=minimal, handling=lenient" })).toEqual({ respondAsync: false, waitMs: undefined });
  });

  it("caps wait at 60 s, ignores what is not whole seconds, and keeps the first of a repeated wait", () => {
    expect(parsePrefer({ prefer: "wait=600" }).waitMs).toBe(60_000);
    for (const bad of ["wait=", "wait=-1", "wait=1.5", "wait=soon", "wait=99999999999"]) expect(parsePrefer({ prefer: bad }).waitMs, bad).toBeUndefined();
    expect(parsePrefer({ prefer: "wait=2, wait=9" }).waitMs).toBe(2_000);
    expect(parsePrefer({ prefer: "wait=x, wait=9" }).waitMs).toBeUndefined();
  });
});

describe("toAcceptWait", () => {
  it("uses the route's wait unless the client says otherwise", () => {
    expect(toAcceptWait(plain, parsePrefer({}))).toEqual({ waitMs: 0, acceptedApplied: undefined, replayApplied: undefined });
    expect(toAcceptWait(waits, parsePrefer({}))).toEqual({ waitMs: 5_000, acceptedApplied: undefined, replayApplied: undefined });
  });

  it("lets wait=N go lower or higher than the route's, and respond-async alone means no wait", () => {
    expect(toAcceptWait(waits, parsePrefer({ prefer: "wait=1" }))).toMatchObject({ waitMs: 1_000, replayApplied: "wait=1" });
    expect(toAcceptWait(plain, parsePrefer({ prefer: "wait=30" }))).toMatchObject({ waitMs: 30_000, replayApplied: "wait=30" });
    expect(toAcceptWait(waits, parsePrefer({ prefer: "respond-async" }))).toEqual({ waitMs: 0, acceptedApplied: "respond-async", replayApplied: undefined });
    expect(toAcceptWait(waits, parsePrefer({ prefer: "respond-async, wait=2" }))).toEqual({ waitMs: 2_000, acceptedApplied: "respond-async", replayApplied: "wait=2" });
  });
});

describe("isAsyncRequest", () => {
  it("makes every request a job on async: always routes, only respond-async ones on async: prefer routes", () => {
    expect(isAsyncRequest(plain, {})).toBe(true);
    expect(isAsyncRequest(optin, {})).toBe(false);
    expect(isAsyncRequest(optin, { prefer: "wait=5" })).toBe(false);
    expect(isAsyncRequest(optin, { prefer: "respond-async" })).toBe(true);
  });
});

describe("toRetryAfterS", () => {
  it("is the estimate's time left in whole seconds, at least 1, at most the route's retryAfter", () => {
    const now = 1_000_000;
    expect(toRetryAfterS(undefined, 30, now)).toBe(30);
    expect(toRetryAfterS(now + 4_200, 30, now)).toBe(5);
    expect(toRetryAfterS(now + 100, 30, now)).toBe(1);
    expect(toRetryAfterS(now - 5_000, 30, now)).toBe(1);
    expect(toRetryAfterS(now + 3_600_000, 30, now)).toBe(30);
  });
});

describe("SSE event ids", () => {
  it("name the state an event shows", () => {
    expect(toEventId({ updatedAt: "1970-01-01T00:00:02.000Z", status: "running" })).toBe("2000-running");
  });
});
