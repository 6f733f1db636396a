/** The handles everything above the NATS plumbing uses to talk to JetStream, opened once per connection. */
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { ObjectStore } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetStreamNames } from "./names.js";

export interface JetStreamContext {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly names: JetStreamNames;
  readonly jobs: KV;
  readonly results: KV;
  readonly bodies: ObjectStore;
  /**
   * The bucket of the shared server key (used without a key file); never expires, never purged.
   * Opened by `provision` only: ops commands (`openJetStream`) do not need it.
   */
  readonly keyBucket?: KV;
  /** The server's max_payload: the largest message, request body and envelope included. */
  readonly maxPayloadBytes: number;
  /** Routes whose consumer this set-up had to create (first start, or a server that lost its state). */
  readonly createdConsumers: readonly string[];
  /**
   * Every route that has a consumer in the stream, configured or not: a route removed from the
   * config (by a reload, or before a restart) may still have queued jobs to work and to look up.
   */
  readonly consumerRoutes: readonly string[];
}

/** nats-server's default max_payload; every server sends its own in INFO, this is for the type's sake. */
const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;

/** The largest message the connected server takes. */
export function maxPayloadOf(nc: NatsConnection): number {
  return nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD_BYTES;
}
