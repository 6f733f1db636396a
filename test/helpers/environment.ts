/**
 * The set-up most test files share: a private nats-server and a recording backend, started
 * before the file's (or describe block's) tests and stopped after them. Vitest runs "after"
 * hooks in reverse order, so anything the tests start later is closed before these two.
 */
import { afterAll, beforeAll } from "vitest";
import { startTestBackend } from "./backend.js";
import type { TestBackend } from "./backend.js";
import { startNatsServer } from "./nats.js";
import type { NatsServer } from "./nats.js";

export interface TestEnvironment {
  readonly nats: NatsServer;
  readonly backend: TestBackend;
}

export function useNatsAndBackend(): TestEnvironment {
  const env = {} as { nats: NatsServer; backend: TestBackend };
  beforeAll(async () => {
    [env.nats, env.backend] = await Promise.all([startNatsServer(), startTestBackend()]);
  });
  afterAll(async () => {
    await Promise.all([env.backend?.close(), env.nats?.close()]);
  });
  return env;
}
