import { describe, expect, it } from "vitest";
import { createRouteMatcher, parseConfig } from "../../src/config/index.js";
import type { RouteConfig } from "../../src/config/index.js";

function route(name: string, path: string, methods?: string[]): RouteConfig {
  return {
    name,
    path,
    methods,
    timeoutMs: 1_000,
    ttlMs: 1_000,
    attempts: 1,
    concurrency: 1,
    retryAfterS: 1,
    backoff: { initialMs: 1_000, maxMs: 1_000, factor: 1, jitter: false },
    retryOn: [],
    maxBodyBytes: 1_024,
    maxResponseBytes: 1_024,
    owner: [],
    resultHeaders: [],
    deadlineMs: undefined,
    waitMs: 0,
    async: "always",
    callbacks: undefined,
  };
}

/** The name of the route that matches, or undefined. */
function matcherOf(routes: RouteConfig[]): (method: string, pathname: string) => string | undefined {
  const match = createRouteMatcher(routes);
  return (method, pathname) => match(method, pathname)?.name;
}

describe("createRouteMatcher", () => {
  it("matches nothing when there are no routes", () => {
    expect(createRouteMatcher([])("GET", "/")).toBeUndefined();
  });

  it("leaves OPTIONS (CORS preflights) to passthrough on a route without methods, unless a route lists it", () => {
    const match = matcherOf([route("any", "/any/**"), route("listed", "/listed/**", ["POST", "OPTIONS"])]);
    expect(match("OPTIONS", "/any/x")).toBeUndefined();
    for (const method of ["GET", "POST", "DELETE", "PATCH"]) expect(match(method, "/any/x"), method).toBe("any");
    expect(match("OPTIONS", "/listed/x")).toBe("listed");
    // A route without methods further down still gets other methods; an OPTIONS falls through to the next that lists it.
    const next = matcherOf([route("any", "/x/**"), route("preflight", "/x/**", ["OPTIONS"])]);
    expect(next("OPTIONS", "/x/a")).toBe("preflight");
    expect(next("GET", "/x/a")).toBe("any");
  });

  it("returns the route object itself", () => {
    const r = route("a", "/a");
    expect(createRouteMatcher([r])("GET", "/a")).toBe(r);
  });

  it("matches exact paths exactly", () => {
    const match = matcherOf([route("health", "/health")]);
    expect(match("GET", "/health")).toBe("health");
    expect(match("GET", "/health/")).toBeUndefined();
    expect(match("GET", "/health/x")).toBeUndefined();
    expect(match("GET", "/healthz")).toBeUndefined();
    expect(match("GET", "/Health")).toBeUndefined();
  });

  it("lets ** match any number of segments, including none", () => {
    const match = matcherOf([route("reports", "/reports/**")]);
    for (const p of ["/reports", "/reports/", "/reports/a", "/reports/a/b/c", "/reports/.hidden"]) {
      expect(match("POST", p), p).toBe("reports");
    }
    for (const p of ["/reportsX", "/x/reports", "/report", "/"]) {
      expect(match("POST", p), p).toBeUndefined();
    }
  });

  it("lets * match exactly one segment", () => {
    const match = matcherOf([route("exports", "/exports/*")]);
    expect(match("GET", "/exports/a")).toBe("exports");
    expect(match("GET", "/exports/a.csv")).toBe("exports");
    expect(match("GET", "/exports/a/b")).toBeUndefined();
    expect(match("GET", "/exports")).toBeUndefined();
    expect(match("GET", "/exports/")).toBeUndefined();
  });

  it("supports globs in the middle of a path", () => {
    const match = matcherOf([route("items", "/api/*/items/**"), route("json", "/files/*.json")]);
    expect(match("GET", "/api/v1/items")).toBe("items");
    expect(match("GET", "/api/v1/items/42/detail")).toBe("items");
    expect(match("GET", "/api/v1/v2/items")).toBeUndefined();
    expect(match("GET", "/files/a.json")).toBe("json");
    expect(match("GET", "/files/a.xml")).toBeUndefined();
  });

  it("does not let globs match dot-dot segments", () => {
    const match = matcherOf([route("reports", "/reports/**"), route("exports", "/exports/*")]);
    expect(match("GET", "/reports/../admin")).toBeUndefined();
    expect(match("GET", "/exports/..")).toBeUndefined();
  });

  it("returns the first matching route in order", () => {
    const match = matcherOf([route("special", "/reports/special"), route("reports", "/reports/**"), route("late", "/reports/special")]);
    expect(match("POST", "/reports/special")).toBe("special");
    expect(match("POST", "/reports/other")).toBe("reports");
  });

  it("skips a route whose methods do not include the request's and keeps looking", () => {
    const match = matcherOf([route("create", "/jobs/**", ["POST"]), route("read", "/jobs/**", ["GET"])]);
    expect(match("POST", "/jobs/1")).toBe("create");
    expect(match("GET", "/jobs/1")).toBe("read");
    expect(match("DELETE", "/jobs/1")).toBeUndefined();
  });

  it("compares methods case-insensitively", () => {
    const match = matcherOf([route("upper", "/a", ["POST"]), route("lower", "/b", ["post"])]);
    expect(match("post", "/a")).toBe("upper");
    expect(match("Post", "/a")).toBe("upper");
    expect(match("POST", "/b")).toBe("lower");
  });

  it("does not let HEAD match a GET-only route", () => {
    const match = matcherOf([route("read", "/r", ["GET"])]);
    expect(match("GET", "/r")).toBe("read");
    expect(match("HEAD", "/r")).toBeUndefined();
  });

  it("matches every method, even unusual ones, when a route lists none", () => {
    const match = matcherOf([route("all", "/all/**")]);
    for (const m of ["GET", "HEAD", "POST", "DELETE", "PROPFIND", "purge"]) expect(match(m, "/all/x"), m).toBe("all");
  });

  it("works on the routes of a loaded (frozen) configuration", () => {
    const config = parseConfig(
      "routes:\n  - { name: reports, methods: [post], path: /reports/** }\n  - { name: exports, path: /exports/* }\n",
    );
    const match = createRouteMatcher(config.routes);
    expect(match("POST", "/reports/2024")?.name).toBe("reports");
    expect(match("GET", "/reports/2024")).toBeUndefined();
    expect(match("GET", "/exports/x")?.name).toBe("exports");
  });
});
