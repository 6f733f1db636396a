/**
 * Recently finished jobs, in memory, so that clients polling a finished job do not cost a NATS
 * round trip each time. Only final records are cached: they never change, so the cache cannot
 * serve a stale status. Small bodies are cached with them, within a byte budget that counts what
 * an entry holds: the record as it was stored (its JSON, with any inline body in base64 and every
 * response header), the cached body, and the objects around them.
 */
import { LRUCache } from "lru-cache";
import type { JobRecord } from "../jobs/record.js";

export interface CachedJob {
  readonly record: JobRecord;
  /** The body bytes, when small enough to keep. */
  readonly body?: Uint8Array;
}

/** Told of every lookup, for metrics. Must not throw. */
export interface ResultCacheObserver {
  hit(): void;
  miss(): void;
}

export interface ResultCacheOptions {
  /** Most jobs kept. Default 10,000. */
  maxEntries?: number;
  /** Most bytes of records and bodies kept, counted by {@link cachedBytes}. Default 64 MiB. */
  maxBytes?: number;
  /** Largest body kept in memory. Default 64 KiB. */
  maxBodyBytes?: number;
  observer?: ResultCacheObserver;
}

export interface ResultCache {
  get(id: string): CachedJob | undefined;
  /** Caches a final record (and its body when small); entries leave at the record's `expiresAt`. */
  set(record: JobRecord, body?: Uint8Array): void;
  /** Forgets a job (canceled or deleted). */
  delete(id: string): void;
  readonly size: number;
}

/** The cache's own entry, the record's objects and the status answer built from it (measured: 300-500 bytes). */
const ENTRY_OVERHEAD_BYTES = 512;
/** What each header string costs besides its characters (V8 string headers; measured: about 24 bytes). */
const PER_HEADER_STRING_BYTES = 24;

/**
 * What a cached job holds in memory, about: the record's JSON length (its strings, inline body and
 * headers included), each header string's own overhead, the body bytes and a fixed overhead.
 */
function cachedBytes(job: CachedJob): number {
  const headers = job.record.response?.headers.length ?? 0;
  return ENTRY_OVERHEAD_BYTES + JSON.stringify(job.record).length + headers * PER_HEADER_STRING_BYTES + (job.body?.byteLength ?? 0);
}

export function createResultCache(options: ResultCacheOptions = {}): ResultCache {
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
  const cache = new LRUCache<string, CachedJob>({
    max: options.maxEntries ?? 10_000,
    maxSize: options.maxBytes ?? 64 * 1024 * 1024,
    sizeCalculation: cachedBytes,
  });
  const observer = options.observer;
  return {
    get(id) {
      const entry = cache.get(id);
      if (observer) {
        if (entry === undefined) observer.miss();
        else observer.hit();
      }
      return entry;
    },
    set(record, body) {
      if (record.expiresAt === undefined) return;
      const ttl = record.expiresAt - Date.now();
      if (ttl <= 0) return;
      const kept = body && body.byteLength <= maxBodyBytes ? body : undefined;
      // The same record again with nothing to add (a result too large to keep, fetched again): no new entry to size.
      const cached = cache.peek(record.id);
      if (cached?.record === record && (kept === undefined || cached.body !== undefined)) return;
      cache.set(record.id, kept ? { record, body: kept } : { record }, { ttl });
    },
    delete(id) {
      cache.delete(id);
    },
    get size() {
      return cache.size;
    },
  };
}
