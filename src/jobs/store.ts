/**
 * Job records, request bodies and response bodies in JetStream. Response bodies that fit in one
 * message go to a KV bucket; larger ones, and request bodies too large for the queue message
 * (the claim check), to the Object Store, which chunks them. Both buckets expire entries by
 * `max_age` (nats-server 2.9 has no per-key TTL); the record's `expiresAt` makes each route's own
 * ttl exact.
 *
 * Record writes that must not overwrite someone else's (a worker finishing a job that was
 * canceled meanwhile) are compare-and-set on the record's revision.
 */
import { randomBytes } from "node:crypto";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { JetStreamContext } from "../nats/context.js";
import { readObject } from "./object-reader.js";
import { BodyLocation, decodeRecord, encodeRecord } from "./record.js";
import type { JobRecord, StoredResponse } from "./record.js";

/** Room left in a message for the KV's own headers when a body goes into the results bucket. */
const KV_HEADROOM_BYTES = 4 * 1024;
/**
 * Bodies up to this size ride in the job record itself (base64): the completed record is then the
 * job's only write after the call, one JetStream round trip instead of two.
 */
export const MAX_INLINE_BODY_BYTES = 8 * 1024;

/** Where `putBody` put a body; `inline` is the base64 bytes for a body kept in the record. */
export interface PutBody {
  readonly location: BodyLocation;
  readonly inline?: string;
}


/** A record and the revision it was read at, for a later compare-and-set. */
export interface VersionedRecord {
  readonly record: JobRecord;
  readonly revision: number;
}

/**
 * "The store": JetStream as slowlane keeps jobs in it (records, request and response bodies, the
 * work queue), over one connection. Proxies and workers get one while NATS is connected and set up.
 */
export interface JobStore {
  /** The JetStream handles and names underneath (the queue and dead letters use them directly). */
  readonly context: JetStreamContext;
  /** Largest response body kept in the results KV; larger ones go to the Object Store. */
  readonly maxKvBodyBytes: number;
  /** The job's record and its revision, or `undefined` when it has none (queued, unknown, deleted). */
  readRecord(id: string): Promise<VersionedRecord | undefined>;
  /**
   * Writes only if the record is still at `revision` (0: only if there is none). Resolves to the
   * new revision, or `undefined` when someone else wrote it first. Only `transitions.ts` calls it.
   */
  writeRecord(record: JobRecord, revision: number): Promise<number | undefined>;
  /** Stores a response body held in memory (small ones go in the record: nothing is written) and says where it went. */
  putBody(id: string, body: Uint8Array): Promise<PutBody>;
  /** Stores a response body as it streams in, in the Object Store. Rejects (and keeps nothing) if `body` errors. */
  putBodyStream(id: string, body: ReadableStream<Uint8Array>): Promise<void>;
  /**
   * The stored body, as bytes (KV) or a stream (Object Store) that reads a chunk only when pulled;
   * `undefined` when it has expired.
   */
  getBody(id: string, response: StoredResponse): Promise<Uint8Array | ReadableStream<Uint8Array> | undefined>;
  /**
   * Stores a request body too large for the queue message under a new name (see
   * {@link requestObjectName}); resolves to its size. Rejects (keeping nothing) if `body` errors.
   */
  putRequestBody(name: string, body: ReadableStream<Uint8Array>): Promise<number>;
  /** A claim-checked request body, or `undefined` if it is gone. */
  getRequestBody(name: string): Promise<ReadableStream<Uint8Array> | undefined>;
  deleteRequestBody(name: string): Promise<void>;
  /** Deletes a job's stored response (both places it may be). */
  deleteResponse(id: string): Promise<void>;
  /** Deletes the record itself: the job becomes unknown (404). */
  deleteRecord(id: string): Promise<void>;
}

/**
 * A fresh Object Store name for a job's claim-checked request body (response bodies use the bare
 * id). Unique per upload: repeats of one idempotent request upload at the same time, and each
 * must be able to delete its own copy when JetStream keeps another's.
 */
export function requestObjectName(id: string): string {
  return `${id}.request.${randomBytes(6).toString("base64url")}`;
}

function isWrongRevision(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

export function createJobStore(context: JetStreamContext): JobStore {
  const { jobs, results, bodies } = context;
  const maxKvBodyBytes = context.maxPayloadBytes - KV_HEADROOM_BYTES;

  async function readRecord(id: string): Promise<VersionedRecord | undefined> {
    const entry = await jobs.get(id);
    if (!entry || entry.operation !== "PUT") return undefined;
    const record = decodeRecord(entry.value);
    return record ? { record, revision: entry.revision } : undefined;
  }

  return {
    context,
    maxKvBodyBytes,
    readRecord,

    async writeRecord(record, revision) {
      try {
        // `create` also succeeds over a deleted or purged record, which `previousSeq: 0` would refuse.
        if (revision === 0) return await jobs.create(record.id, encodeRecord(record));
        return await jobs.put(record.id, encodeRecord(record), { previousSeq: revision });
      } catch (err) {
        if (isWrongRevision(err)) return undefined;
        throw err;
      }
    },

    async putBody(id, body) {
      if (body.byteLength === 0) return { location: BodyLocation.None };
      if (body.byteLength <= MAX_INLINE_BODY_BYTES) {
        return { location: BodyLocation.Inline, inline: Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("base64") };
      }
      if (body.byteLength <= maxKvBodyBytes) {
        await results.put(id, body);
        return { location: BodyLocation.Kv };
      }
      await bodies.putBlob({ name: id }, body);
      return { location: BodyLocation.Object };
    },

    async putBodyStream(id, body) {
      await bodies.put({ name: id }, body);
    },

    async getBody(id, response) {
      switch (response.body) {
        case BodyLocation.None:
          return new Uint8Array(0);
        case BodyLocation.Inline:
          return Buffer.from(response.inline ?? "", "base64");
        case BodyLocation.Kv: {
          const entry = await results.get(id);
          return entry && entry.operation === "PUT" ? entry.value : undefined;
        }
        case BodyLocation.Object:
          return readObject(context, id);
      }
    },

    async putRequestBody(name, body) {
      const info = await bodies.put({ name }, body);
      return info.size;
    },

    getRequestBody(name) {
      return readObject(context, name);
    },

    async deleteRequestBody(name) {
      await bodies.delete(name).catch(() => undefined);
    },

    async deleteResponse(id) {
      await Promise.all([results.purge(id), bodies.delete(id).catch(() => undefined)]);
    },

    async deleteRecord(id) {
      await jobs.purge(id);
    },
  };
}
