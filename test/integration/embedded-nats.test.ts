import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.js";
import type { Logger } from "../../src/log.js";
import { findNatsServerBinary, startEmbeddedNats } from "../../src/nats/embedded-server.js";
import type { EmbeddedNats } from "../../src/nats/embedded-server.js";

const CHILD = fileURLToPath(new URL("../fixtures/embedded-nats-child.ts", import.meta.url));
let scratch: string;
const running: EmbeddedNats[] = [];

/** A pino logger at debug whose parsed lines land in `lines` (pino's own test `sink()` idea). */
function captureLog(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString().split("\n")) if (text !== "") lines.push(JSON.parse(text) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger({ level: "debug", destination }), lines };
}

async function start(storeDir: string, extra: Partial<Parameters<typeof startEmbeddedNats>[0]> = {}): Promise<EmbeddedNats> {
  const nats = await startEmbeddedNats({ storeDir, log: extra.log ?? captureLog().log, ...extra });
  running.push(nats);
  return nats;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 25));
  }
}

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "slowlane-embedded-test-"));
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((n) => n.close()));
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("startEmbeddedNats", () => {
  it("keeps streams across a restart on the same store dir, and close() stops the server", async () => {
    const storeDir = join(scratch, "persist", "nested"); // created if missing
    const first = await start(storeDir);
    expect(first.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    const nc = await connect({ servers: first.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "EMBEDDED", subjects: ["embedded.>"] });
    await jetstream(nc).publish("embedded.job", "kept");
    await nc.close();
    await first.close();
    await first.close(); // idempotent
    expect(isAlive(first.pid)).toBe(false);
    expect(await first.exited).toMatchObject({ expected: true });

    const second = await start(storeDir);
    expect(second.url).not.toBe(first.url);
    const nc2 = await connect({ servers: second.url });
    const info = await (await jetstreamManager(nc2)).streams.info("EMBEDDED");
    expect(info.state.messages).toBe(1);
    await nc2.close();
  });

  it("resolves a relative store dir against the working directory", async () => {
    const absolute = join(scratch, "relative");
    const nats = await start(relative(process.cwd(), absolute));
    expect(nats.storeDir).toBe(absolute);
    expect(existsSync(join(absolute, "jetstream"))).toBe(true);
  });

  it("logs the server's chatter at debug and its [ERR] lines at error, as component nats-server", async () => {
    const { log, lines } = captureLog();
    const nats = await start(join(scratch, "logs"), { log });
    const ready = lines.find((l) => l.msg === "Server is ready");
    expect(ready).toMatchObject({ level: 20, component: "nats-server" });
    // A raw client announcing an oversized message makes the server log an [ERR] line.
    const port = Number(new URL(nats.url).port);
    const socket = tcpConnect(port, "127.0.0.1", () => socket.write("CONNECT {}\r\nPUB x 99999999\r\n"));
    socket.on("error", () => undefined);
    await waitFor(() => lines.some((l) => l.level === 50 && String(l.msg).includes("maximum payload exceeded")), 5_000, "the [ERR] line");
    socket.destroy();
  });

  it("stops the server when its parent process is SIGKILLed", async () => {
    const storeDir = join(scratch, "orphan");
    const child = spawn(process.execPath, ["--import", "tsx", CHILD, storeDir], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const line = await new Promise<string>((done, fail) => {
      let out = "";
      child.stdout.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes("\n")) done(out.split("\n")[0] ?? "");
      });
      child.once("exit", (code) => fail(new Error(`child exited (${code}) before printing its server: ${stderr}`)));
    });
    const { pid } = JSON.parse(line) as { url: string; pid: number };
    expect(isAlive(pid)).toBe(true);
    child.kill("SIGKILL");
    await waitFor(() => !isAlive(pid), 5_000, `nats-server ${pid} to stop after its parent was SIGKILLed`);
  });

  it("reports an exit of the server by itself, and a signal sent to its supervisor", async () => {
    const { log, lines } = captureLog();
    const byItself = await start(join(scratch, "exit-self"), { log });
    process.kill(byItself.pid, "SIGTERM");
    expect(await byItself.exited).toMatchObject({ code: 1, expected: false });
    expect(lines.some((l) => l.level === 50 && String(l.msg).startsWith("the embedded nats-server exited unexpectedly"))).toBe(true);

    if (!existsSync("/proc/self/stat")) return;
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      const nats = await start(join(scratch, `exit-supervisor-${signal}`));
      // Field 4 of /proc/PID/stat is the parent pid: the supervisor.
      const supervisor = Number(readFileSync(`/proc/${nats.pid}/stat`, "utf8").split(") ")[1]?.split(" ")[1]);
      process.kill(supervisor, signal);
      expect(await nats.exited).toMatchObject({ expected: false });
      await waitFor(() => !isAlive(nats.pid), 5_000, `nats-server to stop after its supervisor got ${signal}`);
    }
  });

  it("refuses, at once, a store dir that a live nats-server still uses", async () => {
    const storeDir = join(scratch, "shared");
    const first = await start(storeDir);
    const began = Date.now();
    await expect(start(storeDir)).rejects.toThrow(
      `another nats-server (pid ${first.pid}) is still running on the store dir ${storeDir}`,
    );
    expect(Date.now() - began).toBeLessThan(5_000);
    await first.close();
    // Its pid file is stale now: a new start works.
    await start(storeDir);
  });
});

describe("startEmbeddedNats: failures", () => {
  it("a missing binary gives the install command", async () => {
    const log = captureLog().log;
    const env = { NATS_SERVER_BIN: "/nonexistent/nats-server" };
    await expect(startEmbeddedNats({ storeDir: join(scratch, "nobin"), log, env })).rejects.toThrow(
      "nats-server not found: NATS_SERVER_BIN=/nonexistent/nats-server is not an executable file; install it (apt-get install -y nats-server) or set NATS_SERVER_BIN to its path",
    );
    expect(() => findNatsServerBinary({ PATH: "" }, [])).toThrow(
      "nats-server not found (looked in PATH) for nats.servers: embedded; install it (apt-get install -y nats-server) or set NATS_SERVER_BIN to its path",
    );
    await expect(startEmbeddedNats({ storeDir: join(scratch, "nobin"), log, binary: "/nonexistent/bin" })).rejects.toThrow(/apt-get install -y nats-server/);
  });

  it("a server that dies at start is reported with its last lines", async () => {
    const fake = join(scratch, "dying-nats-server");
    await writeFile(fake, '#!/bin/sh\necho "[42] [INF] Starting nats-server" >&2\necho "[42] [FTL] store is broken" >&2\nexit 1\n');
    await chmod(fake, 0o755);
    await expect(start(join(scratch, "dies"), { binary: fake })).rejects.toThrow(
      "the embedded nats-server exited with code 1 before it was ready; its last output:\n[42] [INF] Starting nats-server\n[42] [FTL] store is broken",
    );
  });

  it("a server that never gets ready times out, is killed, and its output is quoted", async () => {
    const fake = join(scratch, "stuck-nats-server");
    const pidFile = join(scratch, "stuck.pid");
    await writeFile(fake, `#!/bin/sh\necho $$ > ${pidFile}\necho "[7] [INF] recovering streams" >&2\nexec sleep 60\n`);
    await chmod(fake, 0o755);
    await expect(start(join(scratch, "stuck"), { binary: fake, startTimeoutMs: 500 })).rejects.toThrow(
      "the embedded nats-server was not ready with JetStream within 500 ms; its last output:\n[7] [INF] recovering streams",
    );
    // Killed with its supervisor's process group; init reaps it a moment later.
    const stuck = Number(readFileSync(pidFile, "utf8"));
    await waitFor(() => !isAlive(stuck), 2_000, "the stuck server to be killed");
  });
});
