/**
 * Job records, request bodies and response bodies in JetStream. Response bodies that fit in one
 * message go to a KV bucket; larger ones, and request bodies too large for the queue message
 * (the claim check), to the Object Store, which chunks them. Both buckets expire entries by
 * `max_age` (nats-server 2.9 has no per-key TTL); the record's `expiresAt` makes each route's own
 * ttl exact.
 *
 * Record writes that must not overwrite someone else's (a worker finishing a job that was
 * canceled meanwhile) are compare-and-set on the record's revision.
 *
 * With a sealer (a key file is configured) everything stored about a request or a response is
 * sealed for its job's id: response heads (in the record), response bodies in the results bucket and
 * the Object Store, claim-checked request bodies. Each sealed value says so (`sealed` in the record's
 * response, in the claim check): nothing is told apart by sniffing bytes.
 */
import { randomBytes } from "node:crypto";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { JetStreamContext } from "../nats/context.js";
import { sendThisTurn } from "../nats/outbox.js";
import { SealError, sealedSize } from "../security/seal.js";
import type { Sealer } from "../security/seal.js";
import type { JobRequest, StoredBodyRef } from "./envelope.js";
import { readObject } from "./object-reader.js";
import { BodyLocation, decodeRecord, encodeRecord } from "./record.js";
import type { JobRecord, StoredResponse } from "./record.js";
import type { TransitionObserver } from "./transitions.js";

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
  /** Seals what is stored (a key file is configured); `undefined`: stored in plaintext. */
  readonly sealer: Sealer | undefined;
  /** Largest response body kept in the results KV (room for sealing taken off); larger ones go to the Object Store. */
  readonly maxKvBodyBytes: number;
  /** Told of every transition `transitions.ts` makes through this store (events, callbacks). */
  readonly observer?: TransitionObserver;
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
   * Stores job `id`'s request body, too large for the queue message, under a new name (see
   * {@link requestObjectName}); resolves to the claim check (its size is the plaintext's). Rejects
   * (keeping nothing) if `body` errors.
   */
  putRequestBody(id: string, body: ReadableStream<Uint8Array>): Promise<StoredBodyRef>;
  /**
   * The request body of a job as a worker replays it: the message payload, or the claim-checked
   * object (as a stream), opened when sealed; `undefined` when the object is gone. Rejects with a
   * {@link SealError} when the request cannot be opened (its URL and headers included: see
   * `JobRequest.unreadable`); for a stream, the first segment is checked before it is returned.
   */
  openRequestBody(job: JobRequest, payload: Uint8Array): Promise<Uint8Array | ReadableStream<Uint8Array> | undefined>;
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

/** Counts the bytes that pass, for the plaintext size of a body sealed on its way to the Object Store. */
function countBytes(body: ReadableStream<Uint8Array>): { stream: ReadableStream<Uint8Array>; bytes: () => number } {
  let bytes = 0;
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      bytes += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
  return { stream: body.pipeThrough(counter), bytes: () => bytes };
}

/**
 * `stream` once its first chunk has been read: for an opened sealed stream, that is when its header
 * and first segment are checked, so a missing key fails here and not halfway into a backend call.
 */
async function checkedStream(stream: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
  const reader = stream.getReader();
  const first = await reader.read();
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (first.done) controller.close();
      else controller.enqueue(first.value);
    },
    async pull(controller) {
      const next = await reader.read();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

function requireSealer(sealer: Sealer | undefined, what: string): Sealer {
  if (!sealer) throw new SealError(`${what} is encrypted and no key file is configured`);
  return sealer;
}

function isWrongRevision(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

async function openRequestBody(
  context: JetStreamContext,
  sealer: Sealer | undefined,
  job: JobRequest,
  payload: Uint8Array,
): Promise<Uint8Array | ReadableStream<Uint8Array> | undefined> {
  if (job.unreadable !== undefined) throw new SealError(job.unreadable);
  if (job.storedBody === undefined) return job.bodySealed ? requireSealer(sealer, "the request").open(payload, job.id) : payload;
  const data = await readObject(context, job.storedBody.name);
  if (!data) return undefined;
  if (!job.storedBody.sealed) return data;
  return checkedStream(requireSealer(sealer, "the request body").openStream(data, job.id));
}

export interface JobStoreOptions {
  /** Seals what is stored (from the key file); without it, everything is stored in plaintext. */
  sealer?: Sealer | undefined;
  /** Told of every transition (completion events, waiting clients, callbacks). */
  observer?: TransitionObserver | undefined;
}

export function createJobStore(context: JetStreamContext, options: JobStoreOptions = {}): JobStore {
  const { jobs, results, bodies } = context;
  const { sealer } = options;
  const maxKvBodyBytes = context.maxPayloadBytes - KV_HEADROOM_BYTES - (sealer ? sealedSize(0) : 0);
  const seal = (body: Uint8Array, id: string): Uint8Array => (sealer ? sealer.seal(body, id) : body);

  async function readRecord(id: string): Promise<VersionedRecord | undefined> {
    const entry = await jobs.get(id);
    if (!entry || entry.operation !== "PUT") return undefined;
    const record = decodeRecord(entry.value, sealer);
    return record ? { record, revision: entry.revision } : undefined;
  }

  async function getStoredBody(id: string, response: StoredResponse): Promise<Uint8Array | ReadableStream<Uint8Array> | undefined> {
    if (response.body === BodyLocation.Kv) {
      const entry = await results.get(id);
      if (!entry || entry.operation !== "PUT") return undefined;
      return response.sealed ? requireSealer(sealer, "the result").open(entry.value, id) : entry.value;
    }
    // Chunk by chunk, as the reader pulls (nats.js's own get reads ahead without backpressure).
    const data = await readObject(context, id);
    if (!data) return undefined;
    return response.sealed ? requireSealer(sealer, "the result").openStream(data, id) : data;
  }

  return {
    context,
    sealer,
    maxKvBodyBytes,
    ...(options.observer ? { observer: options.observer } : {}),
    readRecord,

    async writeRecord(record, revision) {
      try {
        // `create` also succeeds over a deleted or purged record, which `previousSeq: 0` would refuse.
        const value = encodeRecord(record, sealer);
        return await sendThisTurn(() => (revision === 0 ? jobs.create(record.id, value) : jobs.put(record.id, value, { previousSeq: revision })));
      } catch (err) {
        if (isWrongRevision(err)) return undefined;
        throw err;
      }
    },

    async putBody(id, body) {
      if (body.byteLength === 0) return { location: BodyLocation.None };
      // An inline body rides in the record's head, which `writeRecord` seals.
      if (body.byteLength <= MAX_INLINE_BODY_BYTES) {
        return { location: BodyLocation.Inline, inline: Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("base64") };
      }
      if (body.byteLength <= maxKvBodyBytes) {
        await results.put(id, seal(body, id));
        return { location: BodyLocation.Kv };
      }
      await bodies.putBlob({ name: id }, seal(body, id));
      return { location: BodyLocation.Object };
    },

    async putBodyStream(id, body) {
      await bodies.put({ name: id }, sealer ? sealer.sealStream(body, id) : body);
    },

    async getBody(id, response) {
      switch (response.body) {
        case BodyLocation.None:
          return new Uint8Array(0);
        case BodyLocation.Inline:
          return Buffer.from(response.inline ?? "", "base64");
        case BodyLocation.Kv:
        case BodyLocation.Object:
          return getStoredBody(id, response);
      }
    },

    async putRequestBody(id, body) {
      const name = requestObjectName(id);
      const counted = countBytes(body);
      await bodies.put({ name }, sealer ? sealer.sealStream(counted.stream, id) : counted.stream);
      return { name, bytes: counted.bytes(), ...(sealer ? { sealed: true as const } : {}) };
    },

    openRequestBody: (job, payload) => openRequestBody(context, sealer, job, payload),

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
