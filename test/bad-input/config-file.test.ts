/**
 * Hostile and broken config files, through `parseConfig`/`loadConfig` and through the built CLI
 * (`node dist/cli.js check`, built by `npm test`): each is refused with a ConfigError naming
 * file:line:column and the key path, `check` exits 1, and nothing hangs or crashes.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig, parseConfig } from "../../src/config/index.js";
import { ConfigError } from "../../src/errors.js";
import type { ConfigProblem } from "../../src/errors.js";
import { spawnSlowlane } from "../helpers/slowlane.js";

/** Nine times more at each level: 9^9 (387 million) strings once expanded. */
const ALIAS_BOMB = [
  "# Billion laughs, hidden in a route.",
  "routes:",
  "  - name: bomb",
  "    path: /bomb",
  '    methods: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
  ...["b", "c", "d", "e", "f", "g", "h", "i"].map((name, i) => {
    const prev = "abcdefgh"[i] as string;
    return `  - &${name} [${Array.from({ length: 9 }, () => `*${prev}`).join(", ")}]`;
  }),
  "",
].join("\n");

/** The same through merge keys: every level merges the one before nine times. */
const MERGE_BOMB = [
  "defaults: &a { timeout: 1s, ttl: 1h }",
  ...["b", "c", "d", "e", "f", "g", "h", "i"].map((name, i) => {
    const prev = "abcdefgh"[i] as string;
    return `x${name}: &${name} { <<: [${Array.from({ length: 9 }, () => `*${prev}`).join(", ")}] }`;
  }),
  "",
].join("\n");

const WRONG_TYPES = `listen: [8080, 8081]
upstream: 3000
nats:
  servers: { primary: nats://a:4222 }
  stream: 12
jobs: /jobs
log:
  redactHeaders: x-api-key
defaults:
  timeout: 30
  attempts: "3"
  concurrency: 2.5
routes:
  - name: reports
    path: 42
    methods: POST
  - just a string
`;

const UNKNOWN_KEYS = `timeout: 10m
nats:
  sever: nats://127.0.0.1:4222
routes:
  - name: reports
    path: /reports/**
    timout: 45m
    __proto__: { attempts: 50 }
`;

function configError(run: () => unknown): ConfigError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

const at = (p: ConfigProblem): string => `${p.line ?? "?"}:${p.column ?? "?"} ${p.path}`;

describe("parseConfig and loadConfig", () => {
  it("an alias bomb inside a route: refused at the first alias, not expanded", () => {
    const { problems } = configError(() => parseConfig(ALIAS_BOMB, { file: "bomb.yaml" }));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ path: "routes[1][0]", line: 6, column: 9 });
    expect(problems[0]?.message).toContain("YAML aliases expand too much");
  });

  it("a merge-key bomb: refused, not expanded", () => {
    const { problems } = configError(() => parseConfig(MERGE_BOMB, { file: "merge.yaml" }));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ path: 'xb["<<"][0]', line: 2, column: 15 });
    expect(problems[0]?.message).toContain("YAML aliases expand too much");
  });

  it("wrong types: every one reported with its line and key path", () => {
    const { problems, message } = configError(() => parseConfig(WRONG_TYPES, { file: "types.yaml" }));
    expect(problems.map(at)).toEqual([
      "1:9 listen",
      "2:11 upstream",
      "4:12 nats.servers",
      "5:11 nats.stream",
      "6:7 jobs",
      "8:18 log.redactHeaders",
      "10:12 defaults.timeout",
      "11:13 defaults.attempts",
      "12:16 defaults.concurrency",
      "15:11 routes[0].path",
      "16:14 routes[0].methods",
      "17:5 routes[1]",
    ]);
    expect(message).toContain("types.yaml:10:12 defaults.timeout: 30 has no unit");
  });

  it("unknown keys, __proto__ included: each named, with a suggestion where there is one", () => {
    const { problems } = configError(() => parseConfig(UNKNOWN_KEYS, { file: "keys.yaml" }));
    expect(problems.map((p) => `${at(p)}: ${p.message}`)).toEqual([
      '1:1 timeout: unknown key "timeout" (did you mean "timeout" under "defaults:"?)',
      expect.stringMatching(/^3:3 nats\.sever: unknown key "sever" \(allowed: servers, /),
      '7:5 routes[0].timout: unknown key "timout" (did you mean "timeout"?)',
      expect.stringMatching(/^8:5 routes\[0\]\.__proto__: unknown key "__proto__"/),
    ]);
  });

  it.each([
    ["sequences nested 5,000 deep", `routes: ${"[".repeat(5_000)}${"]".repeat(5_000)}\n`],
    ["mappings nested 3,000 deep", `routes: ${"{a: ".repeat(3_000)}1${"}".repeat(3_000)}\n`],
    ["binary garbage", "listen: \x00\x01\xfe\xff\nupstream: \x1b[31m\n"],
    ["two YAML documents", "listen: 8080\n---\nlisten: 8081\n"],
  ])("%s: a ConfigError, not a crash", (_name, text) => {
    const { problems } = configError(() => parseConfig(text, { file: "odd.yaml" }));
    expect(problems.length).toBeGreaterThan(0);
    expect(problems[0]?.line).toBeGreaterThan(0);
  });

  it.each([
    ["/dev/zero (endless)", "/dev/zero", "larger than"],
    ["a directory", tmpdir(), "cannot read the file (EISDIR)"],
  ])("%s: a ConfigError, read no further than needed", (_name, file, message) => {
    const { problems } = configError(() => loadConfig(file, {}));
    expect(problems[0]?.message).toContain(message);
  });
});

function writeFile(name: string, text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), "slowlane-bad-config-")), name);
  writeFileSync(file, text);
  return file;
}

describe("slowlane check", () => {
  it.each([
    ["an alias bomb", () => writeFile("bomb.yaml", ALIAS_BOMB), /bomb\.yaml:6:9 routes\[1\]\[0\]: YAML aliases expand too much/],
    ["wrong types", () => writeFile("types.yaml", WRONG_TYPES), /types\.yaml:11:13 defaults\.attempts: /],
    ["unknown keys", () => writeFile("keys.yaml", UNKNOWN_KEYS), /keys\.yaml:7:5 routes\[0\]\.timout: unknown key "timout"/],
    ["deep nesting", () => writeFile("deep.yaml", `routes: ${"[".repeat(5_000)}${"]".repeat(5_000)}\n`), /deep\.yaml:1:\d+ /],
    ["/dev/zero", () => "/dev/zero", /\/dev\/zero larger than/],
  ])("%s: exit 1, file:line and key path on stderr, no stack trace", async (_name, file, expected) => {
    const check = spawnSlowlane("check", file());
    expect(await check.exited).toBe(1);
    const output = check.logs.map((l) => l.msg ?? "").join("\n");
    expect(output).toContain("invalid configuration");
    expect(output).toMatch(expected);
    expect(output).not.toMatch(/\n\s+at /);
  });
});
