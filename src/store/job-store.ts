/**
 * Job records and response bodies in JetStream. Bodies that fit in one message go to a KV bucket;
 * larger ones to the Object Store, which chunks them. Both buckets expire entries by `max_age`
 * (nats-server 2.9 has no per-key TTL); the record's `expiresAt` makes each route's own ttl exact.
 */
import type { KV } from "@nats-io/kv";
import type { ObjectStore } from "@nats-io/obj";
import { BodyLocation, decodeRecord, encodeRecord } from "./job-record.js";
import type { JobRecord, StoredResponse } from "./job-record.js";

/** Room left in a message for the KV's own headers when a body goes into the results bucket. */
const KV_HEADROOM_BYTES = 4 * 1024;

export interface JobStoreOptions {
  jobs: KV;
  results: KV;
  bodies: ObjectStore;
  /** The server's max_payload (`JetStreamContext.maxPayloadBytes`). */
  maxPayloadBytes: number;
}

export interface JobStore {
  getRecord(id: string): Promise<JobRecord | undefined>;
  putRecord(record: JobRecord): Promise<void>;
  /** Stores a response body and says where it went. */
  putBody(id: string, body: Uint8Array): Promise<BodyLocation>;
  /** The stored body, as bytes (KV) or a stream (Object Store); `undefined` when it has expired. */
  getBody(id: string, response: StoredResponse): Promise<Uint8Array | ReadableStream<Uint8Array> | undefined>;
}

export function createJobStore(options: JobStoreOptions): JobStore {
  const { jobs, results, bodies } = options;
  const maxKvBodyBytes = options.maxPayloadBytes - KV_HEADROOM_BYTES;

  return {
    async getRecord(id) {
      const entry = await jobs.get(id);
      if (!entry || entry.operation !== "PUT") return undefined;
      return decodeRecord(entry.value);
    },

    async putRecord(record) {
      await jobs.put(record.id, encodeRecord(record));
    },

    async putBody(id, body) {
      if (body.byteLength === 0) return BodyLocation.None;
      if (body.byteLength <= maxKvBodyBytes) {
        await results.put(id, body);
        return BodyLocation.Kv;
      }
      await bodies.putBlob({ name: id }, body);
      return BodyLocation.Object;
    },

    async getBody(id, response) {
      switch (response.body) {
        case BodyLocation.None:
          return new Uint8Array(0);
        case BodyLocation.Kv: {
          const entry = await results.get(id);
          return entry && entry.operation === "PUT" ? entry.value : undefined;
        }
        case BodyLocation.Object: {
          const object = await bodies.get(id);
          return object ? object.data : undefined;
        }
      }
    },
  };
}
