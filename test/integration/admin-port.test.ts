/**
 * Several slowlane processes on one host with the default config (issue 11 §5): the admin port
 * that was not set explicitly falls back to a free one when taken, and says so; a port set
 * explicitly that is taken still stops the process.
 */
import request from "supertest";
import { afterAll, describe, expect, it } from "vitest";
import type { Config } from "../../src/config/index.js";
import { getFreePort } from "../helpers/nats.js";
import { useNatsAndBackend } from "../helpers/environment.js";
import { makeConfig, startApp, uniqueStream } from "../helpers/slowlane.js";
import type { TestApp } from "../helpers/slowlane.js";

const env = useNatsAndBackend();
const apps: TestApp[] = [];
afterAll(async () => {
  for (const app of apps.reverse()) await app.close();
});

/** A config whose admin port is `port`, as if it were the default (`listenExplicit: false`) or set in the file. */
function withAdminPort(port: number, listenExplicit: boolean): Config {
  const config = makeConfig({
    listen: "127.0.0.1:0",
    upstream: env.backend.url,
    nats: { servers: env.nats.url, stream: uniqueStream("adminport") },
    routes: [{ name: "jobs", path: "/jobs/**" }],
  });
  return { ...config, admin: { listen: { host: "127.0.0.1", port }, listenExplicit } };
}

describe("the admin port", () => {
  it("when only the default: a second process on the host takes a free port and logs it", async () => {
    const port = await getFreePort();
    const first = await startApp(withAdminPort(port, false), "proxy");
    apps.push(first);
    const second = await startApp(withAdminPort(port, false), "worker");
    apps.push(second);

    expect(first.app.adminUrl).toBe(`http://127.0.0.1:${port}`);
    expect(second.app.adminUrl).not.toBe(first.app.adminUrl);
    expect((await request(second.app.adminUrl).get("/healthz")).status).toBe(200);
    expect(first.logs.some((l) => l.msg?.startsWith("the default admin port is taken"))).toBe(false);
    const fallback = second.logs.find((l) => l.msg?.startsWith("the default admin port is taken"));
    expect(fallback).toMatchObject({ level: 40, defaultPort: port, url: second.app.adminUrl });
  });

  it("when set explicitly and taken: the process does not start", async () => {
    const port = await getFreePort();
    const first = await startApp(withAdminPort(port, true), "proxy");
    apps.push(first);
    await expect(startApp(withAdminPort(port, true), "worker")).rejects.toThrow(/cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/);
  });
});
