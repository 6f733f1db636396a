/**
 * The fixture a test file starts from (after h3's `test/_setup.ts` and nats.js's launcher):
 *
 *   const slowlane = useSlowlane({ routes: [{ name: "slow", methods: ["POST"], path: "/slow" }] });
 *   const id = await slowlane.submit("post", "/slow?ms=0", { body: "x" });
 *   expect((await slowlane.waitFinal(id)).body.status).toBe("completed");
 *
 * It registers a `beforeAll` that starts a private nats-server, a recording backend (the config's
 * `upstream`) and slowlane in this process on a fresh stream, waits until it is ready, and an
 * `afterAll` that closes them in reverse. Several fixtures in one file can share one nats-server
 * and backend: pass the file's `useNatsAndBackend()` as `environment`. Helpers registered after
 * the fixture (`useJetStreamInspector(slowlane)`) close before it: vitest runs "after" hooks in
 * reverse order.
 */
import { afterAll, beforeAll } from "vitest";
import type { Role, Slowlane, SlowlaneOptions } from "../../src/app.js";
import type { Config } from "../../src/config/index.js";
import { startTestBackend } from "./backend.js";
import type { TestBackend } from "./backend.js";
import type { TestEnvironment } from "./environment.js";
import { createJobsClient } from "./jobs.js";
import type { JobsClient } from "./jobs.js";
import { startNatsServer } from "./nats.js";
import type { NatsServer } from "./nats.js";
import { makeConfig, startApp, uniqueStream } from "./slowlane.js";
import type { LogLine, TestApp } from "./slowlane.js";

/** A piece of slowlane's YAML config, as a test writes it. */
export type ConfigDoc = Record<string, unknown>;

/** What the fixture started, for a `config` that needs it (a URL, a port). */
export interface Started {
  readonly nats: NatsServer | undefined;
  readonly backend: TestBackend | undefined;
}

export interface UseSlowlaneOptions {
  /** The config's `routes`. */
  routes: ConfigDoc[];
  /** Default `run` (proxy and worker in one process). */
  role?: Role;
  /** How long `close()` lets running backend calls finish; default 2 s. */
  drainMs?: number;
  /** Node HTTP server limits of the proxy (short timeouts for slow-client tests). */
  serverLimits?: SlowlaneOptions["serverLimits"];
  /**
   * Other config keys (`defaults`, `nats.ackWait`, `upstream`...), laid over the fixture's
   * (`listen` on port 0, `upstream` = the backend, `nats.servers` and a fresh `nats.stream`); `nats`
   * is merged key by key. A function is called in `beforeAll`, once the nats-server and backend run.
   */
  config?: ConfigDoc | ((started: Started) => ConfigDoc | Promise<ConfigDoc>);
  /** Environment overrides the config loader sees (`NATS_URL`...); default none. */
  env?: NodeJS.ProcessEnv;
  /** Share the file's nats-server and backend (`useNatsAndBackend()`) instead of starting private ones. */
  environment?: TestEnvironment;
  /** Start a private nats-server; default true. False when `config.nats.servers` points elsewhere. */
  nats?: boolean;
  /** Start a recording backend as the `upstream`; default true. False when `config.upstream` is given. */
  backend?: boolean;
  /** A label in the stream's name, to tell the file's streams apart; default "test". */
  stream?: string;
  /** Wait for `app.ready` in `beforeAll` (NATS reached, JetStream set up); default true. */
  ready?: boolean;
}

export interface SlowlaneFixture extends JobsClient {
  /** The nats-server (private or shared); throws when the fixture started none. */
  readonly nats: NatsServer;
  /** The recording backend (private or shared); throws when the fixture started none. */
  readonly backend: TestBackend;
  readonly config: Config;
  /** `config.nats.stream`. */
  readonly stream: string;
  readonly app: Slowlane;
  /** `http://host:port` of the proxy ("" for a worker). */
  readonly url: string;
  /** Every log line of this slowlane, parsed. */
  readonly logs: LogLine[];
  /** Closes slowlane now (the nats-server and backend stay until `afterAll`); safe to call twice. */
  close(): Promise<void>;
}

interface State {
  nats?: NatsServer;
  backend?: TestBackend;
  app?: TestApp;
  closing?: Promise<void>;
  /** What this fixture started itself, closed last. */
  owned: (() => Promise<void>)[];
}

async function startDependencies(options: UseSlowlaneOptions, state: State): Promise<void> {
  if (options.environment) {
    state.nats = options.environment.nats;
    state.backend = options.environment.backend;
    return;
  }
  const [nats, backend] = await Promise.allSettled([
    options.nats === false ? undefined : startNatsServer(),
    options.backend === false ? undefined : startTestBackend(),
  ]);
  // Whatever did start is closed in afterAll, even when the other failed.
  if (nats.status === "fulfilled") state.nats = nats.value;
  if (backend.status === "fulfilled") state.backend = backend.value;
  for (const started of [state.backend, state.nats]) if (started) state.owned.push(() => started.close());
  for (const result of [nats, backend]) if (result.status === "rejected") throw result.reason;
}

async function buildConfig(options: UseSlowlaneOptions, started: Started): Promise<Config> {
  const extra = typeof options.config === "function" ? await options.config(started) : (options.config ?? {});
  const extraNats = (extra.nats ?? {}) as ConfigDoc;
  const doc: ConfigDoc = {
    listen: "127.0.0.1:0",
    ...(started.backend ? { upstream: started.backend.url } : {}),
    ...extra,
    nats: {
      ...(started.nats ? { servers: started.nats.url } : {}),
      stream: uniqueStream(options.stream ?? "test"),
      ...extraNats,
    },
    routes: options.routes,
  };
  return makeConfig(doc, options.env);
}

/** Registers the fixture's `beforeAll` and `afterAll`; its values exist between the two. */
export function useSlowlane(options: UseSlowlaneOptions): SlowlaneFixture {
  const state: State = { owned: [] };

  beforeAll(async () => {
    await startDependencies(options, state);
    const config = await buildConfig(options, { nats: state.nats, backend: state.backend });
    state.app = await startApp(config, { role: options.role, drainMs: options.drainMs, serverLimits: options.serverLimits });
    if (options.ready !== false) await state.app.app.ready;
  });
  afterAll(async () => {
    await fixture.close();
    await Promise.all(state.owned.map((close) => close()));
  });

  const app = (): TestApp => {
    if (!state.app) throw new Error("useSlowlane: slowlane runs only between the file's beforeAll and afterAll");
    return state.app;
  };
  const fixture: SlowlaneFixture = {
    ...createJobsClient(() => app().url),
    get nats() {
      if (!state.nats) throw new Error("useSlowlane: no nats-server was started (nats: false)");
      return state.nats;
    },
    get backend() {
      if (!state.backend) throw new Error("useSlowlane: no backend was started (backend: false)");
      return state.backend;
    },
    get config() {
      return app().config;
    },
    get stream() {
      return app().config.nats.stream;
    },
    get app() {
      return app().app;
    },
    get url() {
      return app().url;
    },
    get logs() {
      return app().logs;
    },
    close() {
      if (!state.app) return Promise.resolve();
      state.closing ??= state.app.close();
      return state.closing;
    },
  };
  return fixture;
}
