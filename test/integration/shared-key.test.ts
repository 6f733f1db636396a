/**
 * Without a key file, replicas share one random server key kept in a NATS KV bucket: whichever
 * replica starts first creates it, the others read it back. Against a real nats-server, with each
 * "replica" on its own connection.
 */
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSealer } from "../../src/security/seal.js";
import { loadOrCreateSharedKey } from "../../src/security/server-keys.js";
import { startNatsServer } from "../helpers/nats.js";
import type { NatsServer } from "../helpers/nats.js";

let nats: NatsServer;
let replicaA: NatsConnection;
let replicaB: NatsConnection;

beforeAll(async () => {
  nats = await startNatsServer();
  [replicaA, replicaB] = await Promise.all([connect({ servers: nats.url }), connect({ servers: nats.url })]);
});
afterAll(async () => {
  await Promise.all([replicaA?.close(), replicaB?.close()]);
  await nats?.close();
});

let buckets = 0;
/** A fresh bucket, opened from both replicas' connections. */
async function freshBucket(options: { ttl?: number } = {}): Promise<[KV, KV]> {
  buckets += 1;
  const name = `keys_${buckets}`;
  const kvA = await new Kvm(jetstream(replicaA)).create(name, { history: 1, ...options });
  const kvB = await new Kvm(jetstream(replicaB)).open(name);
  return [kvA, kvB];
}

async function keysIn(kv: KV): Promise<string[]> {
  const names: string[] = [];
  for await (const name of await kv.keys()) names.push(name);
  return names;
}

describe("shared server key", () => {
  it("is the same for two replicas starting at once", async () => {
    // Several rounds, each on a fresh bucket, so the create race is run more than once.
    for (let round = 0; round < 5; round += 1) {
      const [kvA, kvB] = await freshBucket();
      const [keysA, keysB] = await Promise.all([loadOrCreateSharedKey(kvA), loadOrCreateSharedKey(kvB)]);
      expect(keysA.all).toHaveLength(1);
      expect(keysB.all).toHaveLength(1);
      expect(keysB.primary.id).toBe(keysA.primary.id);
      expect(keysB.primary.bytes.equals(keysA.primary.bytes)).toBe(true);
      expect(keysA.primary.bytes).toHaveLength(32);

      const names = await keysIn(kvA);
      expect(names).toHaveLength(1);
      const stored = await kvA.get(names[0] as string);
      expect(Buffer.from(stored?.value ?? []).equals(keysA.primary.bytes)).toBe(true);

      const sealed = createSealer(keysA).seal(Buffer.from("from replica A"), "job-1");
      expect(createSealer(keysB).open(sealed, "job-1").toString()).toBe("from replica A");
    }
  });

  it("is read back by a replica starting later, and is random per bucket", async () => {
    const [kvA, kvB] = await freshBucket();
    const first = await loadOrCreateSharedKey(kvA);
    const later = await loadOrCreateSharedKey(kvB);
    const again = await loadOrCreateSharedKey(kvA);
    expect(later.primary.bytes.equals(first.primary.bytes)).toBe(true);
    expect(again.primary.id).toBe(first.primary.id);

    const [otherBucket] = await freshBucket();
    const other = await loadOrCreateSharedKey(otherBucket);
    expect(other.primary.bytes.equals(first.primary.bytes)).toBe(false);
  });

  it("refuses a bucket whose entries expire, writing nothing", async () => {
    const [kv] = await freshBucket({ ttl: 60_000 });
    await expect(loadOrCreateSharedKey(kv)).rejects.toThrow(/expires entries after 60000 ms; the shared server key needs a bucket without a TTL/);
    expect(await keysIn(kv)).toEqual([]);
  });

  it("refuses a stored key that is not 32 bytes, without printing it", async () => {
    const [kvA, kvB] = await freshBucket();
    await loadOrCreateSharedKey(kvA);
    const [name] = await keysIn(kvA);
    await kvA.put(name as string, Buffer.from("hand-edited secret"));
    const err = await loadOrCreateSharedKey(kvB).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/holds 18 bytes, not 32/);
    expect(err?.message).not.toContain("hand-edited");
  });
});
