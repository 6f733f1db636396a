/**
 * Recently finished jobs, in memory, so that clients polling a finished job do not cost a NATS
 * round trip each time. Only final records are cached: they never change, so the cache cannot
 * serve a stale status. Small bodies are cached with them, within a byte budget.
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
  /** Most bytes of records and bodies kept. Default 64 MiB. */
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

const RECORD_OVERHEAD_BYTES = 512;

export function createResultCache(options: ResultCacheOptions = {}): ResultCache {
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
  const cache = new LRUCache<string, CachedJob>({
    max: options.maxEntries ?? 10_000,
    maxSize: options.maxBytes ?? 64 * 1024 * 1024,
    sizeCalculation: (job) => RECORD_OVERHEAD_BYTES + (job.body?.byteLength ?? 0),
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
      const entry: CachedJob = body && body.byteLength <= maxBodyBytes ? { record, body } : { record };
      cache.set(record.id, entry, { ttl });
    },
    delete(id) {
      cache.delete(id);
    },
    get size() {
      return cache.size;
    },
  };
}
