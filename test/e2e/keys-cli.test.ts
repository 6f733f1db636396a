/**
 * The server key from the command line, as ops use it: `slowlane keygen` prints a key line,
 * `slowlane check` checks the key file and says in one line whether storage is encrypted
 * (`SLOWLANE_KEY_FILE` winning over `security.keyFile`). Needs `npm run build` first.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseServerKeys } from "../../src/security/server-keys.js";
import { writeKeyFile } from "../helpers/keys.js";
import { spawnSlowlane, writeConfigFile } from "../helpers/slowlane.js";

const CLI = fileURLToPath(new URL("../../dist/cli.js", import.meta.url));

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}

function output(logs: { msg?: string }[]): string {
  return logs.map((l) => l.msg ?? "").join("\n");
}

/** The one line `check` prints about storage. */
function storageLine(text: string): string[] {
  return text.split("\n").filter((line) => line.startsWith("storage:"));
}

describe("slowlane keygen", () => {
  it("prints one new key line, a different one each time, that a key file takes", async () => {
    const [a, b] = await Promise.all([runCli(["keygen"]), runCli(["keygen"])]);
    expect(a.code).toBe(0);
    const lines = a.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(parseServerKeys(a.stdout, "keygen").all).toHaveLength(1);
    expect(b.stdout).not.toBe(a.stdout);
  });
});

describe("slowlane check and the key file", () => {
  const config = writeConfigFile({ routes: [{ name: "reports", path: "/reports/**" }] });

  it("says storage is not encrypted without a key file", async () => {
    const check = spawnSlowlane("check", config, { SLOWLANE_KEY_FILE: "" });
    expect(await check.exited).toBe(0);
    const lines = storageLine(output(check.logs));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^storage: NOT encrypted/);
  });

  it("says storage is encrypted with SLOWLANE_KEY_FILE, which wins over security.keyFile", async () => {
    const keys = await runCli(["keygen"]);
    const file = writeKeyFile([keys.stdout.trim()]);
    const withYamlKey = writeConfigFile({ security: { keyFile: "/nonexistent/keys" } });
    const check = spawnSlowlane("check", withYamlKey, { SLOWLANE_KEY_FILE: file });
    expect(await check.exited).toBe(0);
    const lines = storageLine(output(check.logs));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`storage: encrypted at rest (AES-256-GCM) with key file ${file}`);
    expect(output(check.logs)).not.toContain(keys.stdout.trim());
  });

  it("refuses a bad key file with the line at fault (never its content), exit 1", async () => {
    const file = writeKeyFile(["# rotated 2026-11", "not-a-key-at-all"]);
    const check = spawnSlowlane("check", config, { SLOWLANE_KEY_FILE: file });
    expect(await check.exited).toBe(1);
    const text = output(check.logs);
    expect(text).toMatch(/line 2: not base64/);
    expect(text).not.toContain("not-a-key-at-all");
  });
});
