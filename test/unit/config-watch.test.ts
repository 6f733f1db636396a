/**
 * What a reload changes (`diffConfig`, `toReloadedConfig`) and the config file watcher on a real
 * filesystem: in-place writes, unchanged content, and the ConfigMap symlink swap.
 */
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { diffConfig, isUnchanged, toReloadedConfig } from "../../src/config/diff.js";
import { createConfigWatcher } from "../../src/config/watch.js";
import type { ConfigWatcher } from "../../src/config/watch.js";
import { createLogger } from "../../src/log.js";
import { createLogSink, makeConfig } from "../helpers/slowlane.js";
import { waitFor } from "../helpers/wait.js";

const base = {
  listen: "127.0.0.1:8080",
  upstream: "http://127.0.0.1:3000",
  routes: [
    { name: "a", path: "/a" },
    { name: "b", path: "/b", timeout: "1m" },
  ],
};

describe("diffConfig", () => {
  it("finds nothing between equal configs", () => {
    expect(isUnchanged(diffConfig(makeConfig(base), makeConfig(base)))).toBe(true);
  });

  it("names added, removed, changed and reordered routes, and changed keys", () => {
    const next = makeConfig({
      ...base,
      upstream: "http://127.0.0.1:4000",
      defaults: { retryAfter: "5s" },
      routes: [{ name: "c", path: "/c" }, { name: "b", path: "/b", timeout: "2m" }, { name: "a", path: "/a" }],
    });
    const changes = diffConfig(makeConfig(base), next);
    expect(changes).toMatchObject({
      routesAdded: ["c"],
      routesRemoved: [],
      needsRestart: [],
      routesReordered: true,
    });
    // `a` inherits the new retryAfter, `b` has a new timeout too.
    expect(changes.routesChanged).toEqual(["b", "a"]);
    expect(changes.keys).toEqual(["defaults.retryAfterS", "upstream"]);
  });

  it("names the keys that need a restart, and the reloaded config keeps their running values", () => {
    const previous = makeConfig(base);
    const loaded = makeConfig({
      ...base,
      listen: "127.0.0.1:9999",
      admin: { listen: "127.0.0.1:1" },
      nats: { servers: "nats://elsewhere:4222", stream: "OTHER", ackWait: "5s" },
      jobs: { path: "/jobs" },
      log: { redactHeaders: ["x-key"] },
    });
    expect(diffConfig(previous, loaded).needsRestart).toEqual([
      "admin.listen",
      "jobs.path",
      "listen",
      "log.redactHeaders",
      "nats.servers",
      "nats.stream",
    ]);
    const next = toReloadedConfig(previous, loaded);
    expect(next.listen).toEqual(previous.listen);
    expect(next.admin).toEqual(previous.admin);
    expect(next.jobs).toEqual(previous.jobs);
    expect(next.log).toEqual(previous.log);
    expect(next.nats).toEqual({ ...previous.nats, ackWaitMs: 5_000 });
    expect(Object.isFrozen(next) && Object.isFrozen(next.nats)).toBe(true);
    expect(diffConfig(previous, next).keys).toEqual(["nats.ackWaitMs"]);
  });

  it("counts NATS credentials, TLS and the embedded server among the keys read once at start", () => {
    const previous = makeConfig(base);
    const loaded = makeConfig({
      ...base,
      nats: { auth: { user: "slowlane", passwordFile: "/run/pw" }, tls: { ca: "/run/ca.pem" } },
    });
    expect(diffConfig(previous, loaded).needsRestart).toEqual(["nats.auth", "nats.tls"]);
    const next = toReloadedConfig(previous, loaded);
    expect(next.nats.auth).toBe(previous.nats.auth);
    expect(next.nats.tls).toBe(previous.nats.tls);
    const embedded = makeConfig({ ...base, nats: { servers: "embedded", storeDir: "/tmp/a" } });
    const moved = makeConfig({ ...base, nats: { servers: "embedded", storeDir: "/tmp/b" } });
    expect(diffConfig(embedded, moved).needsRestart).toEqual(["nats.embedded"]);
    expect(toReloadedConfig(embedded, moved).nats.embedded).toEqual({ storeDir: "/tmp/a" });
  });
});

describe("createConfigWatcher", () => {
  const dirs: string[] = [];
  const watchers: ConfigWatcher[] = [];
  afterEach(() => {
    for (const w of watchers.splice(0)) w.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  function watchFile(file: string): string[] {
    const seen: string[] = [];
    const log = createLogger({ level: "debug", destination: createLogSink().stream });
    watchers.push(
      createConfigWatcher({
        file,
        log,
        pollIntervalMs: 100,
        debounceMs: 20,
        onChange: async () => {
          seen.push(readFileSync(file, "utf8"));
        },
      }),
    );
    return seen;
  }

  it("calls back when the file is rewritten, not when the same text is written again", async () => {
    const dir = mkdtempSync(join(tmpdir(), "slowlane-watch-"));
    dirs.push(dir);
    const file = join(dir, "slowlane.yaml");
    writeFileSync(file, "a: 1\n");
    const seen = watchFile(file);

    writeFileSync(file, "a: 2\n");
    await waitFor(() => seen.length === 1, { what: "the first change" });
    writeFileSync(file, "a: 2\n");
    writeFileSync(join(dir, "unrelated.txt"), "x");
    writeFileSync(file, "a: 3\n");
    await waitFor(() => seen.length === 2, { what: "the second change" });
    expect(seen).toEqual(["a: 2\n", "a: 3\n"]);
  });

  it("follows a Kubernetes ConfigMap update, again and again", async () => {
    const dir = mkdtempSync(join(tmpdir(), "slowlane-watch-"));
    dirs.push(dir);
    const version = (n: number): void => {
      mkdirSync(join(dir, `..v${n}`));
      writeFileSync(join(dir, `..v${n}`, "slowlane.yaml"), `version: ${n}\n`);
      symlinkSync(`..v${n}`, join(dir, "..data_tmp"));
      renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
      if (n > 1) rmSync(join(dir, `..v${n - 1}`), { recursive: true });
    };
    version(1);
    symlinkSync(join("..data", "slowlane.yaml"), join(dir, "slowlane.yaml"));
    const seen = watchFile(join(dir, "slowlane.yaml"));

    for (let n = 2; n <= 4; n++) {
      version(n);
      await waitFor(() => seen.at(-1) === `version: ${n}\n`, { what: `version ${n}` });
    }
    expect(seen).toEqual(["version: 2\n", "version: 3\n", "version: 4\n"]);
  });
});
