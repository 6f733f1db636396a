/**
 * Looking at what slowlane keeps in JetStream, from a connection of the test's own: messages in a
 * stream, values in a KV bucket, objects in an Object Store.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll } from "vitest";
import type { TestEnvironment } from "./environment.js";

export interface JetStreamInspector {
  /** The test's own connection (open between the file's beforeAll and afterAll). */
  readonly nc: NatsConnection;
  streamMessages(stream: string): Promise<number>;
  /** The value under `key`, `undefined` when there is none (never written, deleted or purged). */
  kvValue(bucket: string, key: string): Promise<Uint8Array | undefined>;
  /** Names of the live (not deleted) objects in an Object Store. */
  liveObjects(store: string): Promise<string[]>;
  /** Whether `store` holds a live object `name` or, for a request body, `name.<suffix>` (each upload has its own). */
  hasObject(store: string, name: string): Promise<boolean>;
}

/** `env`: anything with the nats-server, read in `beforeAll` (`useNatsAndBackend()`, `useSlowlane()`). */
export function useJetStreamInspector(env: Pick<TestEnvironment, "nats">): JetStreamInspector {
  let nc: NatsConnection | undefined;
  beforeAll(async () => {
    nc = await connect({ servers: env.nats.url });
  });
  afterAll(async () => {
    await nc?.close();
  });
  const connection = (): NatsConnection => {
    if (!nc) throw new Error("the inspector's connection is open only while the file's tests run");
    return nc;
  };

  async function liveObjects(store: string): Promise<string[]> {
    const os = await new Objm(connection()).open(store);
    return (await os.list()).filter((o) => !o.deleted).map((o) => o.name);
  }

  return {
    get nc() {
      return connection();
    },
    async streamMessages(stream) {
      return (await (await jetstreamManager(connection())).streams.info(stream)).state.messages;
    },
    async kvValue(bucket, key) {
      const entry = await (await new Kvm(connection()).open(bucket)).get(key);
      return entry && entry.operation === "PUT" ? entry.value : undefined;
    },
    liveObjects,
    async hasObject(store, name) {
      return (await liveObjects(store)).some((n) => n === name || n.startsWith(`${name}.`));
    },
  };
}
