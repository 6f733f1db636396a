import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it, vi } from "vitest";
import { configJsonSchema, describeConfig, loadConfig, parseConfig } from "../../src/config/index.js";
import type { Config } from "../../src/config/index.js";
import { allowedKeys, configSchema } from "../../src/config/schema.js";
import { ConfigError, ErrorCodes } from "../../src/errors.js";
import type { ConfigProblem } from "../../src/errors.js";

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/config/${name}`, import.meta.url));
const exampleFile = fileURLToPath(new URL("../../config/slowlane.yaml", import.meta.url));

/** Parses `text`, expecting a ConfigError, and returns it. */
function configError(text: string, file?: string): ConfigError {
  try {
    parseConfig(text, { file });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`expected a ConfigError for:\n${text}`);
}

/** The single problem `text` has. */
function onlyProblem(text: string): ConfigProblem {
  const { problems } = configError(text);
  expect(problems).toHaveLength(1);
  return problems[0] as ConfigProblem;
}

const MiB = 1024 * 1024;
const DEFAULT_SETTINGS = {
  backoff: { initialMs: 1_000, maxMs: 60_000, factor: 2, jitter: true },
  retryOn: [],
  maxBodyBytes: 32 * MiB,
  maxResponseBytes: 256 * MiB,
  owner: ["authorization"],
  resultHeaders: [],
  deadlineMs: undefined,
  waitMs: 0,
  async: "always" as const,
  callbacks: undefined,
};

const DEFAULT_CONFIG: Config = {
  listen: { host: "0.0.0.0", port: 8080 },
  upstream: "http://127.0.0.1:3000",
  nats: {
    servers: ["nats://127.0.0.1:4222"],
    embedded: undefined,
    stream: "SLOWLANE",
    ackWaitMs: 30_000,
    replicas: 1,
    tls: undefined,
    auth: undefined,
  },
  admin: { listen: { host: "0.0.0.0", port: 9090 }, listenExplicit: false },
  server: { maxConnections: 10_000, maxInflightBodyBytes: 64 * MiB },
  security: { keyFile: undefined },
  shutdownTimeoutMs: 25_000,
  jobs: { path: "/_slowlane/jobs" },
  log: { redactHeaders: [] },
  defaults: { timeoutMs: 600_000, ttlMs: 3_600_000, attempts: 3, concurrency: 8, retryAfterS: 2, ...DEFAULT_SETTINGS },
  routes: [],
};

describe("the example file config/slowlane.yaml", () => {
  it("loads, with the documented routes", () => {
    const config = loadConfig(exampleFile, {});
    expect(config).toEqual({
      ...DEFAULT_CONFIG,
      // The example runs an embedded nats-server, so that `npm start` needs nothing else.
      nats: { ...DEFAULT_CONFIG.nats, servers: [], embedded: { storeDir: ".slowlane/nats" } },
      routes: [
        {
          name: "reports",
          methods: ["POST"],
          path: "/reports/**",
          timeoutMs: 45 * 60_000,
          ttlMs: 24 * 3_600_000,
          attempts: 3,
          concurrency: 8,
          retryAfterS: 2,
          ...DEFAULT_SETTINGS,
          retryOn: [502, 503, 504],
        },
        {
          name: "exports",
          methods: ["GET", "POST"],
          path: "/exports/*",
          timeoutMs: 600_000,
          ttlMs: 3_600_000,
          attempts: 3,
          concurrency: 2,
          retryAfterS: 2,
          ...DEFAULT_SETTINGS,
        },
      ],
    });
  });

  it("explains every key the schema knows", () => {
    const text = readFileSync(exampleFile, "utf8");
    const sections = allowedKeys([]).map((key) => [key]);
    const keys = [...sections, ["routes", 0]].flatMap((path) => allowedKeys(path));
    expect(keys.length).toBeGreaterThan(15);
    for (const key of keys) expect(text, key).toMatch(new RegExp(`\\b${key}\\b`));
  });
});

describe("defaults", () => {
  it("gives every default for an empty file", () => {
    expect(parseConfig("")).toEqual(DEFAULT_CONFIG);
  });

  it("gives every default for a file with only comments", () => {
    expect(parseConfig("# nothing here yet\n\n# listen: 9000\n")).toEqual(DEFAULT_CONFIG);
  });

  it("gives defaults for empty sections", () => {
    expect(parseConfig("nats: {}\njobs: {}\nlog: {}\ndefaults: {}\nroutes: []\n")).toEqual(DEFAULT_CONFIG);
  });

  it("fills route settings from defaults, which a route may override key by key", () => {
    const config = parseConfig(`
defaults:
  timeout: 1m
  ttl: 2h
  attempts: 5
  concurrency: 4
  retryAfter: 3s
routes:
  - name: plain
    path: /plain
  - name: custom
    path: /custom
    timeout: 90s
    attempts: 1
`);
    expect(config.defaults).toEqual({
      timeoutMs: 60_000,
      ttlMs: 7_200_000,
      attempts: 5,
      concurrency: 4,
      retryAfterS: 3,
      ...DEFAULT_SETTINGS,
    });
    expect(config.routes[0]).toEqual({ name: "plain", methods: undefined, path: "/plain", ...config.defaults });
    expect(config.routes[1]).toEqual({
      name: "custom",
      methods: undefined,
      path: "/custom",
      timeoutMs: 90_000,
      ttlMs: 7_200_000,
      attempts: 1,
      concurrency: 4,
      retryAfterS: 3,
      ...DEFAULT_SETTINGS,
    });
  });

  it("merges a route's backoff with the defaults' key by key, and reads retryOn and sizes", () => {
    const config = parseConfig(`
defaults:
  backoff: { initial: 2s, factor: 3 }
  retryOn: [503, 502, 503]
  maxBodySize: 1MB
routes:
  - name: a
    path: /a
    backoff: { max: 5m, jitter: false }
    retryOn: [429]
    maxBodySize: 512KiB
    maxResponseSize: 1048576
`);
    expect(config.defaults.backoff).toEqual({ initialMs: 2_000, maxMs: 60_000, factor: 3, jitter: true });
    expect(config.defaults.retryOn).toEqual([502, 503]);
    expect(config.defaults.maxBodyBytes).toBe(1_000_000);
    expect(config.routes[0]).toMatchObject({
      backoff: { initialMs: 2_000, maxMs: 300_000, factor: 3, jitter: false },
      retryOn: [429],
      maxBodyBytes: 512 * 1024,
      maxResponseBytes: MiB,
    });
  });

  it.each([
    ["defaults:\n  retryOn: [200]", "defaults.retryOn[0]", "must be an HTTP status from 400 to 599, got 200"],
    ["defaults:\n  maxBodySize: 32 MB", "defaults.maxBodySize", '"32 MB" is not a size'],
    ["defaults:\n  maxBodySize: 0", "defaults.maxBodySize", "0 is not a positive size"],
    ["defaults:\n  maxResponseSize: 17GiB", "defaults.maxResponseSize", '"17GiB" is too large (at most 16GiB)'],
    ["defaults:\n  backoff: { factor: 0.5 }", "defaults.backoff.factor", "must be a number from 1 to 10, got 0.5"],
    ["defaults:\n  backoff: { initial: 1 }", "defaults.backoff.initial", '1 has no unit: write "1s"'],
    ["defaults:\n  backoff: { delay: 1s }", "defaults.backoff.delay", "unknown key"],
    ["nats:\n  replicas: 7", "nats.replicas", "must be a whole number from 1 to 5, got 7"],
    ["admin:\n  listen: nowhere", "admin.listen", '"nowhere" is not a listen address'],
    ["shutdownTimeout: 25", "shutdownTimeout", '25 has no unit: write "25s"'],
    [`upstream: ${"x".repeat(100_000)}`, "upstream", `"${"x".repeat(80)}…" is not an absolute URL`],
  ])("explains %j at its key path", (text, path, message) => {
    const problem = onlyProblem(text.replaceAll("\\n", "\n"));
    expect(problem.path).toBe(path);
    expect(problem.message).toContain(message);
  });
});

describe("normalization", () => {
  it.each([
    ["9000", { host: "0.0.0.0", port: 9000 }],
    ["'9000'", { host: "0.0.0.0", port: 9000 }],
    ["0", { host: "0.0.0.0", port: 0 }],
    ["127.0.0.1:8081", { host: "127.0.0.1", port: 8081 }],
    ["localhost:65535", { host: "localhost", port: 65_535 }],
    ["'[::]:8080'", { host: "::", port: 8080 }],
  ])("reads listen: %s", (value, listen) => {
    expect(parseConfig(`listen: ${value}`).listen).toEqual(listen);
  });

  it.each([
    ["http://backend:8000/", "http://backend:8000"],
    ["https://backend.example/api/", "https://backend.example/api"],
    ["http://127.0.0.1:3000", "http://127.0.0.1:3000"],
    ["HTTP://Backend:80/v1", "http://backend/v1"],
  ])("normalizes upstream %s to %s", (value, upstream) => {
    expect(parseConfig(`upstream: ${value}`).upstream).toBe(upstream);
  });

  it("accepts NATS servers as a string, a comma-separated string or a list", () => {
    expect(parseConfig("nats: { servers: nats://a:4222 }").nats.servers).toEqual(["nats://a:4222"]);
    expect(parseConfig("nats: { servers: 'nats://a:4222, nats://b:4222' }").nats.servers).toEqual([
      "nats://a:4222",
      "nats://b:4222",
    ]);
    expect(parseConfig("nats: { servers: [nats://a:4222, nats://b:4222] }").nats.servers).toEqual([
      "nats://a:4222",
      "nats://b:4222",
    ]);
  });

  it("strips a trailing slash from jobs.path", () => {
    expect(parseConfig("jobs: { path: /jobs/ }").jobs.path).toBe("/jobs");
  });

  it("lower-cases and de-duplicates redacted header names", () => {
    expect(parseConfig("log: { redactHeaders: [X-Api-Key, x-api-key, Proxy-Authorization] }").log.redactHeaders).toEqual([
      "x-api-key",
      "proxy-authorization",
    ]);
  });

  it("upper-cases and de-duplicates route methods", () => {
    const config = parseConfig("routes: [{ name: r, path: /r, methods: [post, Get, POST] }]");
    expect(config.routes[0]?.methods).toEqual(["POST", "GET"]);
  });

  it("rounds retryAfter up to whole seconds, at least 1", () => {
    const config = parseConfig(`
defaults: { retryAfter: 1500ms }
routes:
  - { name: short, path: /short, retryAfter: 100ms }
  - { name: exact, path: /exact, retryAfter: 1m }
`);
    expect(config.defaults.retryAfterS).toBe(2);
    expect(config.routes.map((r) => r.retryAfterS)).toEqual([1, 60]);
  });

  it("accepts the smallest allowed ackWait and ttl, for tests", () => {
    const config = parseConfig("nats: { ackWait: 100ms }\ndefaults: { ttl: 1s }");
    expect(config.nats.ackWaitMs).toBe(100);
    expect(config.defaults.ttlMs).toBe(1_000);
  });

  it("lets YAML anchors and merge keys share route settings", () => {
    const config = parseConfig(`
routes:
  - &slow { name: a, path: /a, timeout: 1h, attempts: 1 }
  - { <<: *slow, name: b, path: /b }
`);
    expect(config.routes[1]).toMatchObject({ name: "b", path: "/b", timeoutMs: 3_600_000, attempts: 1 });
  });
});

describe("environment", () => {
  it("lets NATS_URL (comma-separated) replace nats.servers", () => {
    const config = parseConfig("nats: { servers: nats://file:4222 }", {
      env: { NATS_URL: "nats://env-a:4222, nats://env-b:4222" },
    });
    expect(config.nats.servers).toEqual(["nats://env-a:4222", "nats://env-b:4222"]);
  });

  it("lets NATS_URL replace `servers: embedded` too: then no embedded server is started", () => {
    const embedded = parseConfig("nats: { servers: embedded }", { env: {} });
    expect(embedded.nats.embedded).toEqual({ storeDir: ".slowlane/nats" });
    const config = parseConfig("nats: { servers: embedded }", { env: { NATS_URL: "nats://env-a:4222" } });
    expect(config.nats.servers).toEqual(["nats://env-a:4222"]);
    expect(config.nats.embedded).toBeUndefined();
  });

  it("ignores an empty NATS_URL", () => {
    expect(parseConfig("", { env: { NATS_URL: " " } }).nats.servers).toEqual(["nats://127.0.0.1:4222"]);
  });

  it("uses no environment in parseConfig unless given one", () => {
    vi.stubEnv("NATS_URL", "nats://from-process:4222");
    try {
      expect(parseConfig("").nats.servers).toEqual(["nats://127.0.0.1:4222"]);
      expect(loadConfig(fixture("minimal.yaml")).nats.servers).toEqual(["nats://from-process:4222"]);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it("applies the env loadConfig is given", () => {
    const config = loadConfig(fixture("minimal.yaml"), { NATS_URL: "nats://given:4222" });
    expect(config.nats.servers).toEqual(["nats://given:4222"]);
    expect(config.upstream).toBe("http://backend:8000");
  });
});

describe("the returned Config", () => {
  it("is deeply frozen", () => {
    const config = parseConfig("log: { redactHeaders: [x-a] }\nroutes: [{ name: r, path: /r, methods: [GET] }]");
    const parts: unknown[] = [
      config,
      config.listen,
      config.nats,
      config.nats.servers,
      config.jobs,
      config.log,
      config.log.redactHeaders,
      config.defaults,
      config.routes,
      config.routes[0],
      config.routes[0]?.methods,
    ];
    for (const part of parts) expect(Object.isFrozen(part)).toBe(true);
    expect(() => {
      (config.listen as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => {
      (config.routes as RouteConfigArray).push(config.routes[0] as Config["routes"][number]);
    }).toThrow(TypeError);
  });

  it("is a new object each time: parsing twice gives equal, separate configs", () => {
    const a = parseConfig("routes: [{ name: r, path: /r }]");
    const b = parseConfig("routes: [{ name: r, path: /r }]");
    expect(a).toEqual(b);
    expect(a.routes).not.toBe(b.routes);
  });

  it("comes from a schema that never mutates its input", () => {
    const input = deepFreeze({
      listen: 9000,
      nats: { servers: "nats://a:4222, nats://b:4222" },
      log: { redactHeaders: ["X-A", "x-a"] },
      routes: [{ name: "r", path: "/r", methods: ["post", "POST"], retryAfter: "1500ms" }],
    });
    const copy = structuredClone(input);
    const result = configSchema.safeParse(input);
    expect(result.success).toBe(true);
    expect(input).toEqual(copy);
  });
});

type RouteConfigArray = Config["routes"][number][];

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

describe("problems, one kind at a time", () => {
  it("reports a value of the wrong type", () => {
    expect(onlyProblem("defaults:\n  attempts: '3'\n")).toEqual({
      path: "defaults.attempts",
      message: 'must be a whole number from 1 to 100, got "3"',
      line: 2,
      column: 13,
    });
    expect(onlyProblem("nats: [a, b]").path).toBe("nats");
    expect(onlyProblem("nats: [a, b]").message).toContain("must be a mapping");
  });

  it("reports out-of-range numbers", () => {
    expect(onlyProblem("defaults: { concurrency: 0 }").message).toBe("must be a whole number from 1 to 10000, got 0");
    expect(onlyProblem("defaults: { attempts: 101 }").message).toBe("must be a whole number from 1 to 100, got 101");
    expect(onlyProblem("defaults: { attempts: 2.5 }").message).toBe("must be a whole number from 1 to 100, got 2.5");
  });

  it("reports a bad duration with the fix", () => {
    expect(onlyProblem("routes:\n  - name: r\n    path: /r\n    timeout: ten minutes\n")).toEqual({
      path: "routes[0].timeout",
      message: '"ten minutes" is not a duration (use 30s, 10m, 2h)',
      line: 4,
      column: 14,
    });
  });

  it("reports a number given for a duration, suggesting a unit", () => {
    const problem = onlyProblem("defaults:\n  ttl: 3600\n");
    expect(problem).toMatchObject({ path: "defaults.ttl", line: 2, column: 8 });
    expect(problem.message).toBe('3600 has no unit: write "3600s" (units: ms, s, m, h, d)');
  });

  it("reports durations outside their range", () => {
    expect(onlyProblem("nats: { ackWait: 50ms }").message).toBe('"50ms" is too short (at least 100ms)');
    expect(onlyProblem("defaults: { ttl: 500ms }").message).toBe('"500ms" is too short (at least 1s)');
    expect(onlyProblem("defaults: { timeout: 30d }").message).toBe('"30d" is too long (at most 24d)');
    expect(onlyProblem("defaults: { timeout: 0s }").message).toContain("is not a positive duration");
  });

  it("reports an empty value, pointing at its key", () => {
    expect(onlyProblem("defaults:\n  retryAfter:\n")).toEqual({
      path: "defaults.retryAfter",
      message: "has no value (set one, or remove the key to use the default)",
      line: 2,
      column: 3,
    });
  });

  it("reports an unknown key at the top level, pointing at the key", () => {
    expect(onlyProblem("listen: 8080\nupstrem: http://x\n")).toEqual({
      path: "upstrem",
      message: 'unknown key "upstrem" (did you mean "upstream"?)',
      line: 2,
      column: 1,
    });
  });

  it("says where a misplaced key belongs", () => {
    expect(onlyProblem("timeout: 1m").message).toBe('unknown key "timeout" (did you mean "timeout" under "defaults:"?)');
    expect(onlyProblem("timout: 1m").message).toBe('unknown key "timout" (did you mean "timeout" under "defaults:"?)');
  });

  it("lists the allowed keys when nothing is close", () => {
    expect(onlyProblem("jobs: { url: /x }").message).toBe('unknown key "url" (allowed: path)');
  });

  it("reports an unknown key in a route, with a suggestion", () => {
    expect(onlyProblem("routes:\n  - name: r\n    path: /r\n    timout: 5m\n")).toEqual({
      path: "routes[0].timout",
      message: 'unknown key "timout" (did you mean "timeout"?)',
      line: 4,
      column: 5,
    });
    expect(onlyProblem("routes: [{ name: r, path: /r, method: [GET] }]").message).toBe(
      'unknown key "method" (did you mean "methods"?)',
    );
  });

  it("reports a missing required key at the route's mapping", () => {
    const { problems } = configError("routes:\n  - name: r\n  - methods: [GET]\n    path: /x\n");
    expect(problems).toEqual([
      { path: "routes[0].path", message: "is required", line: 2, column: 5 },
      { path: "routes[1].name", message: "is required", line: 3, column: 5 },
    ]);
  });

  it("reports duplicate route names, ignoring case", () => {
    const problem = onlyProblem("routes:\n  - name: reports\n    path: /a\n  - name: Reports\n    path: /b\n");
    expect(problem).toMatchObject({ path: "routes[1].name", line: 4, column: 11 });
    expect(problem.message).toBe(
      'duplicate route name "Reports": routes[0] is named "reports" (names must be unique, ignoring case)',
    );
  });

  it.each(["my reports", "a.b", "", "x".repeat(65), "räports"])("reports the bad route name %j", (name) => {
    const problem = onlyProblem(`routes: [{ name: ${JSON.stringify(name)}, path: /r }]`);
    expect(problem.path).toBe("routes[0].name");
    expect(problem.message).toBe(
      `${JSON.stringify(name)} is not a valid route name (use 1-64 letters, digits, "_" or "-")`,
    );
  });

  it("reports a bad method, listing the valid ones", () => {
    const problem = onlyProblem("routes:\n  - name: r\n    path: /r\n    methods: [GET, FETCH]\n");
    expect(problem).toMatchObject({ path: "routes[0].methods[1]", line: 4, column: 20 });
    expect(problem.message).toBe('"FETCH" is not an HTTP method (must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)');
  });

  it("reports methods that are not a non-empty list", () => {
    expect(onlyProblem("routes: [{ name: r, path: /r, methods: POST }]").message).toBe(
      'must be a list of methods like [GET, POST], got "POST"',
    );
    expect(onlyProblem("routes: [{ name: r, path: /r, methods: [] }]").message).toContain("at least one method");
  });

  it("reports a route path that does not start with /", () => {
    expect(onlyProblem("routes:\n  - name: r\n    path: reports/**\n")).toEqual({
      path: "routes[0].path",
      message: '"reports/**" must start with "/" (write "/reports/**")',
      line: 3,
      column: 11,
    });
    expect(onlyProblem("routes: [{ name: r, path: '/r?x=1' }]").message).toContain('must not contain "?"');
  });

  it.each([
    ["/a/../b", "has a dot segment"],
    ["/./reports/**", "has a dot segment"],
    ["/a%2Fb", "slash or backslash escape"],
    ["/a\\\\b", "slash or backslash escape"],
    ["/%72eports/**", "escapes a letter, digit or -._~"],
    ["/caf%c3%a9", "percent-escape in lower case"],
  ])("reports the route path %j, which no normalised request path could match", (path, message) => {
    expect(onlyProblem(`routes: [{ name: r, path: "${path}" }]`)).toMatchObject({ path: "routes[0].path" });
    expect(onlyProblem(`routes: [{ name: r, path: "${path}" }]`).message).toContain(message);
  });

  it("takes a route path with upper-case escapes of reserved characters", () => {
    expect(parseConfig("routes: [{ name: r, path: '/caf%C3%A9/**' }]").routes[0]?.path).toBe("/caf%C3%A9/**");
  });

  it("reports a route at or under jobs.path", () => {
    const underDefault = onlyProblem("routes:\n  - name: r\n    path: /_slowlane/jobs/**\n");
    expect(underDefault).toMatchObject({ path: "routes[0].path", line: 3, column: 11 });
    expect(underDefault.message).toContain('is at or under jobs.path "/_slowlane/jobs"');
    expect(onlyProblem("jobs: { path: /status/ }\nroutes: [{ name: r, path: /status }]").path).toBe("routes[0].path");
    // A sibling that merely shares a prefix is fine.
    expect(parseConfig("routes: [{ name: r, path: /_slowlane/jobsite }]").routes).toHaveLength(1);
  });

  it("reports a bad jobs.path", () => {
    expect(onlyProblem("jobs: { path: jobs }").message).toBe('"jobs" must start with "/" (e.g. /_slowlane/jobs)');
    expect(onlyProblem("jobs: { path: /jobs/* }").message).toContain('no "*"');
    expect(onlyProblem("jobs: { path: / }").message).toContain('must not be "/"');
  });

  it.each(["abc", "70000", "host:99999", "'host:'", "':8080'", "-1", "1.5", "'a b:80'", "[8080]"])(
    "reports the bad listen address %s",
    (value) => {
      const problem = onlyProblem(`listen: ${value}`);
      expect(problem).toMatchObject({ path: "listen", line: 1, column: 9 });
      expect(problem.message).toContain("is not a listen address (use host:port like 0.0.0.0:8080, or a port number 0-65535)");
    },
  );

  it.each([
    ["ftp://backend", "is not an http(s) URL"],
    ["backend:3000", "is not an http(s) URL"],
    ["/relative", "is not an absolute URL"],
    ["http://backend/?a=1", "must not have a query or fragment"],
    ["http://backend/#top", "must not have a query or fragment"],
    ["3000", "must be a URL like http://127.0.0.1:3000, got 3000"],
  ])("reports the bad upstream %s", (value, message) => {
    const problem = onlyProblem(`upstream: ${value}`);
    expect(problem).toMatchObject({ path: "upstream", line: 1, column: 11 });
    expect(problem.message).toContain(message);
  });

  it("reports bad NATS settings", () => {
    expect(onlyProblem("nats: { servers: [] }").message).toContain("must be a NATS URL or a non-empty list of them");
    expect(onlyProblem("nats: { servers: 4222 }").path).toBe("nats.servers");
    expect(onlyProblem("nats: { stream: my.stream }").message).toBe(
      '"my.stream" is not a valid stream name (use 1-32 letters, digits, "_" or "-")',
    );
  });

  it("reports a file that is not a mapping", () => {
    expect(onlyProblem("- listen: 8080")).toMatchObject({ path: "", line: 1, column: 1 });
    expect(onlyProblem("just text").message).toContain("the file must be a mapping of keys");
  });

  it("reports a YAML syntax error with its line, without validating further", () => {
    const error = configError(readFileSync(fixture("syntax-error.yaml"), "utf8"), "syntax-error.yaml");
    expect(error.problems.length).toBeGreaterThan(0);
    for (const p of error.problems) {
      expect(p.message).toMatch(/^YAML syntax error: /);
      expect(p.line).toBe(5);
    }
    expect(error.message).toContain("syntax-error.yaml:5:");
  });

  it("reports duplicate YAML keys", () => {
    expect(onlyProblem("listen: 80\nupstream: http://x\nlisten: 81\n")).toMatchObject({
      message: "YAML syntax error: Map keys must be unique",
      line: 3,
      column: 1,
    });
  });

  it("refuses an alias bomb quickly, pointing at the first alias", () => {
    const started = performance.now();
    let error: unknown;
    try {
      loadConfig(fixture("alias-bomb.yaml"), {});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const { problems } = error as ConfigError;
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ line: 3, column: 8 });
    expect(problems[0]?.message).toContain("YAML aliases expand too much");
    // A generous bound: expanding the document would take minutes and gigabytes.
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("reports an alias used before its anchor", () => {
    expect(onlyProblem("listen: *port\nupstream: &port 1\n")).toMatchObject({ line: 1, column: 9 });
    expect(onlyProblem("listen: *port\n").message).toMatch(/^YAML/);
  });

  it("reports a merge key whose source is not a mapping", () => {
    const problem = onlyProblem("routes:\n  - name: r\n    path: /r\n    <<: 1\n");
    expect(problem).toMatchObject({ line: 4, column: 5 });
    expect(problem.message).toContain("Merge sources must be maps");
  });

  it("reports a mapping used as a key as an unknown key", () => {
    expect(onlyProblem("? [a]\n: 1\n")).toMatchObject({ line: 1, message: expect.stringContaining("unknown key") });
  });

  it("reports a missing file as a ConfigError", () => {
    const missing = fixture("does-not-exist.yaml");
    expect(() => loadConfig(missing, {})).toThrow(ConfigError);
    try {
      loadConfig(missing, {});
    } catch (err) {
      const error = err as ConfigError;
      expect(error.code).toBe(ErrorCodes.CONFIG_INVALID);
      expect(error.file).toBe(missing);
      expect(error.problems[0]?.message).toContain("file not found");
      expect(error.cause).toMatchObject({ code: "ENOENT" });
    }
  });

  it("reports a directory as an unreadable file", () => {
    expect(() => loadConfig(fileURLToPath(new URL("../fixtures/config/", import.meta.url)), {})).toThrow(
      /cannot read the file \(EISDIR\)/,
    );
  });
});

describe("problems, all at once", () => {
  it("reports every problem of a file, in file order, with its line", () => {
    let error: ConfigError | undefined;
    try {
      loadConfig(fixture("many-problems.yaml"), {});
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = error?.problems ?? [];
    expect(problems.map(({ path, line, column }) => ({ path, line, column }))).toEqual([
      { path: "listen", line: 2, column: 9 },
      { path: "nats.ackWait", line: 6, column: 12 },
      { path: "defaults.timeout", line: 8, column: 12 },
      { path: "routes[0].timout", line: 13, column: 5 },
      { path: "routes[1].name", line: 14, column: 11 },
      { path: "routes[1].methods[0]", line: 15, column: 15 },
      { path: "routes[1].path", line: 16, column: 11 },
    ]);
    expect(problems.map((p) => p.message)).toEqual([
      '"localhost" is not a listen address (use host:port like 0.0.0.0:8080, or a port number 0-65535)',
      '30 has no unit: write "30s" (units: ms, s, m, h, d)',
      '"ten minutes" is not a duration (use 30s, 10m, 2h)',
      'unknown key "timout" (did you mean "timeout"?)',
      'duplicate route name "reports": routes[0] is named "reports" (names must be unique, ignoring case)',
      '"FETCH" is not an HTTP method (must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)',
      '"exports/*" must start with "/" (write "/exports/*")',
    ]);
    expect(error?.message.split("\n")).toContain(
      `  ${fixture("many-problems.yaml")}:8:12 defaults.timeout: "ten minutes" is not a duration (use 30s, 10m, 2h)`,
    );
  });

  it("reports cross-route problems alongside type errors", () => {
    const { problems } = configError(`
routes:
  - { name: a, path: /a, attempts: 1.5 }
  - { name: a, path: /_slowlane/jobs }
`);
    expect(problems.map((p) => p.path)).toEqual(["routes[0].attempts", "routes[1].name", "routes[1].path"]);
  });
});

describe("describeConfig", () => {
  it("summarizes the configuration and its routes", () => {
    const text = describeConfig(loadConfig(exampleFile, {}));
    expect(text).toContain("listen:    0.0.0.0:8080");
    expect(text).toContain("upstream:  http://127.0.0.1:3000");
    // The example runs an embedded nats-server, so that `npm start` needs nothing else.
    expect(text).toContain("embedded nats-server, store .slowlane/nats (stream prefix SLOWLANE, ackWait 30s, replicas 1)");
    expect(text).toContain("admin:     0.0.0.0:9090");
    expect(text).toContain("retryOn none, maxBodySize 32MiB, maxResponseSize 256MiB");
    expect(text).toContain("jobs:      /_slowlane/jobs/<id>");
    const lines = text.split("\n");
    const header = lines.find((l) => l.includes("NAME"));
    expect(header?.trim().split(/\s+/)).toEqual([
      "NAME",
      "METHODS",
      "PATH",
      "TIMEOUT",
      "TTL",
      "ATTEMPTS",
      "CONCURRENCY",
      "RETRY-AFTER",
      "RETRY-ON",
      "MAX-BODY",
    ]);
    const row = (name: string) => lines.find((l) => l.trim().startsWith(`${name} `))?.trim().split(/\s+/);
    expect(row("reports")).toEqual(["reports", "POST", "/reports/**", "45m", "1d", "3", "8", "2s", "502,503,504", "32MiB"]);
    expect(row("exports")).toEqual(["exports", "GET,POST", "/exports/*", "10m", "1h", "3", "2", "2s", "-", "32MiB"]);
  });

  it("says when there are no routes, and brackets IPv6 hosts", () => {
    const text = describeConfig(parseConfig("listen: '[::]:9000'"));
    expect(text).toContain("listen:    [::]:9000");
    expect(text).toContain("routes:    none");
  });
});

describe("configJsonSchema", () => {
  it("describes the file for editors, rejecting unknown keys", () => {
    const schema = configJsonSchema() as {
      type?: string;
      additionalProperties?: boolean;
      properties?: Record<string, { items?: { required?: string[]; additionalProperties?: boolean } }>;
    };
    expect(schema.type).toBe("object");
    expect(schema.additionalProperties).toBe(false);
    expect(Object.keys(schema.properties ?? {})).toEqual([
      "listen",
      "upstream",
      "nats",
      "jobs",
      "admin",
      "server",
      "security",
      "shutdownTimeout",
      "log",
      "defaults",
      "routes",
    ]);
    expect(schema.properties?.routes?.items?.required).toEqual(["name", "path"]);
    expect(schema.properties?.routes?.items?.additionalProperties).toBe(false);
    expect(() => JSON.stringify(schema)).not.toThrow();
  });
});
