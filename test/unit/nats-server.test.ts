import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { connect as connectTcp } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findNatsServerBinary, startNatsServer } from "../helpers/nats.js";
import type { NatsServer } from "../helpers/nats.js";

/** Resolves with the first line the server sends on a fresh TCP connection (NATS greets with `INFO {...}`). */
function readGreeting(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ host: "127.0.0.1", port });
    let data = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      data += chunk;
      const end = data.indexOf("\r\n");
      if (end >= 0) {
        socket.destroy();
        resolve(data.slice(0, end));
      }
    });
    socket.once("error", reject);
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe("startNatsServer", () => {
  let server: NatsServer;

  beforeAll(async () => {
    server = await startNatsServer();
  });

  afterAll(async () => {
    await server?.close();
  });

  it("starts on a free port with a temporary store dir", async () => {
    expect(server.port).toBeGreaterThan(0);
    expect(server.url).toBe(`nats://127.0.0.1:${server.port}`);
    expect(server.pid).toBeTypeOf("number");
    expect(await exists(server.storeDir)).toBe(true);
  });

  it("accepts TCP connections and speaks NATS", async () => {
    const greeting = await readGreeting(server.port);
    expect(greeting).toMatch(/^INFO \{/);
    const info = JSON.parse(greeting.slice("INFO ".length)) as { port: number; jetstream?: boolean };
    expect(info.port).toBe(server.port);
    expect(info.jetstream).toBe(true);
  });

  it("has JetStream enabled, storing under storeDir", async () => {
    const res = await fetch(`${server.monitorUrl}/jsz`, { headers: { connection: "close" } });
    expect(res.status).toBe(200);
    const jsz = (await res.json()) as { config: { store_dir: string } };
    expect(jsz.config.store_dir.startsWith(server.storeDir)).toBe(true);

    const nc = await connect({ servers: server.url });
    try {
      const jsm = await jetstreamManager(nc);
      const account = await jsm.getAccountInfo();
      expect(account.streams).toBe(0);
    } finally {
      await nc.close();
    }
  });

  it("keeps port, store dir and file-backed streams across a SIGKILL restart", async () => {
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "T", subjects: ["t.>"], storage: StorageType.File });
      const ack = await jetstream(nc).publish("t.one", "hello");
      expect(ack.seq).toBe(1);
    } finally {
      await nc.close();
    }

    const { port, url, storeDir, pid } = server;
    await server.restart("SIGKILL");
    expect(server.port).toBe(port);
    expect(server.url).toBe(url);
    expect(server.storeDir).toBe(storeDir);
    expect(server.pid).toBeTypeOf("number");
    expect(server.pid).not.toBe(pid);

    const nc2 = await connect({ servers: server.url });
    try {
      const jsm = await jetstreamManager(nc2);
      const info = await jsm.streams.info("T");
      expect(info.state.messages).toBe(1);
    } finally {
      await nc2.close();
    }
  });

  it("restarts after SIGTERM too, and stop() is idempotent", async () => {
    await server.stop();
    await server.stop();
    expect(server.pid).toBeUndefined();
    await server.restart();
    expect(await readGreeting(server.port)).toMatch(/^INFO /);
  });
});

describe("close", () => {
  it("removes the store dir it created, and is idempotent", async () => {
    const server = await startNatsServer();
    expect(await exists(server.storeDir)).toBe(true);
    await server.close();
    expect(server.pid).toBeUndefined();
    expect(await exists(server.storeDir)).toBe(false);
    await server.close();
    await expect(server.restart()).rejects.toThrow(/closed/);
  });

  it("leaves a store dir it was given (and takes port 0 as any free port)", async () => {
    const storeDir = await mkdtemp(join(tmpdir(), "slowlane-test-store-"));
    try {
      const server = await startNatsServer({ storeDir, port: 0 });
      expect(server.storeDir).toBe(storeDir);
      expect(server.port).toBeGreaterThan(0);
      expect(server.port).not.toBe(4222);
      await server.close();
      expect(await exists(join(storeDir, "jetstream"))).toBe(true);
    } finally {
      await rm(storeDir, { recursive: true, force: true });
    }
  });
});

describe("start failures", () => {
  it("rejects with the server's output when it exits early", async () => {
    await expect(startNatsServer({ args: ["--no-such-flag"] })).rejects.toThrow(/before it was ready[\s\S]*no-such-flag/);
  });

  it("rejects with the output tail and kills the process when not ready in time", async () => {
    const dir = await mkdtemp(join(tmpdir(), "slowlane-test-bin-"));
    try {
      // Never listens: readiness can only time out.
      const binary = join(dir, "fake-nats-server");
      await writeFile(binary, "#!/bin/sh\necho 'fake server warming up' >&2\nexec sleep 30\n");
      await chmod(binary, 0o755);
      await expect(startNatsServer({ binary, startTimeoutMs: 300 })).rejects.toThrow(
        /not ready .* within 300 ms:\nfake server warming up/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("rejects when the binary cannot be spawned", async () => {
    await expect(startNatsServer({ binary: "/nonexistent/nats-server" })).rejects.toThrow(/failed to start .*ENOENT/);
  });

  it("rejects when the requested port is taken", async () => {
    const first = await startNatsServer();
    try {
      await expect(startNatsServer({ port: first.port })).rejects.toThrow(/address already in use/);
    } finally {
      await first.close();
    }
  });
});

describe("findNatsServerBinary", () => {
  it("gives an install hint when NATS_SERVER_BIN points nowhere", () => {
    const find = (): string => findNatsServerBinary({ NATS_SERVER_BIN: "/nonexistent", PATH: "" });
    expect(find).toThrow(/apt-get install -y nats-server/);
    expect(find).toThrow(/NATS_SERVER_BIN/);
  });

  it("prefers NATS_SERVER_BIN, then PATH", async () => {
    const dir = await mkdtemp(join(tmpdir(), "slowlane-test-bin-"));
    try {
      const fake = join(dir, "nats-server");
      await writeFile(fake, "#!/bin/sh\nexit 0\n");
      await chmod(fake, 0o755);
      expect(findNatsServerBinary({ NATS_SERVER_BIN: fake, PATH: "" })).toBe(fake);
      expect(findNatsServerBinary({ PATH: `/nonexistent:${dir}` })).toBe(fake);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
