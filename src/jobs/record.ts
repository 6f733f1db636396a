/**
 * The job record: the one JSON document per job, in the jobs KV bucket, that every proxy replica
 * reads to answer a status URL. Workers write it at each transition; the proxy never does.
 */
import type { ErrorCode } from "../errors.js";
import type { JobTraceCarrier } from "../tracing/index.js";

export const JobStatus = {
  Queued: "queued",
  Running: "running",
  Completed: "completed",
  Failed: "failed",
  Canceled: "canceled",
} as const;
export type JobStatus = (typeof JobStatus)[keyof typeof JobStatus];

/** Where a completed job's response body is kept: in the record itself when small, else beside it. */
export const BodyLocation = { None: "none", Inline: "inline", Kv: "kv", Object: "object" } as const;
export type BodyLocation = (typeof BodyLocation)[keyof typeof BodyLocation];

/** The backend's answer, minus the body bytes (stored apart so a status poll never reads them). */
export interface StoredResponse {
  readonly status: number;
  /** Flat name/value pairs, hop-by-hop headers removed, repeated headers (set-cookie) kept. */
  readonly headers: readonly string[];
  readonly bodyBytes: number;
  readonly body: BodyLocation;
  /** The body bytes, base64, when `body` is `inline`. */
  readonly inline?: string;
}

export interface JobFailure {
  readonly code: ErrorCode;
  readonly message: string;
  /** The backend's status, when the failure is an answer listed in `retryOn`. */
  readonly upstreamStatus?: number;
}

/** One backend call, as kept in the record (the latest {@link MAX_HISTORY} of them). */
export interface AttemptRecord {
  readonly attempt: number;
  /** Epoch milliseconds. */
  readonly startedAt: number;
  readonly durationMs: number;
  /** The backend's status, or what went wrong: `timeout`, `unreachable`, `too_large`, `aborted`. */
  readonly outcome: string;
}

export const MAX_HISTORY = 10;

export interface JobRecord {
  readonly id: string;
  readonly route: string;
  readonly status: JobStatus;
  /** Backend calls started so far (a call cut short by a worker crash counts too). */
  readonly attempts: number;
  /** Calls that got no answer (timeout, connection error): what the route's `attempts` limits. */
  readonly failures?: number;
  /** Epoch milliseconds. */
  readonly createdAt: number;
  readonly updatedAt: number;
  /** Set when the job is final: after this instant the job is gone (410, then 404). */
  readonly expiresAt?: number;
  readonly response?: StoredResponse;
  /** Why a job failed, or why the last attempt of a job still queued failed. */
  readonly error?: JobFailure;
  /** The latest backend calls, oldest first: when each started, how long it took, how it ended. */
  readonly history?: readonly AttemptRecord[];
  /** Times `slowlane jobs retry` requeued this job after it failed. */
  readonly retries?: number;
  /** Starts that never ended (the worker died or lost NATS mid-call); too many fail the job as poison. */
  readonly interruptions?: number;
  /** The span of the latest attempt that reached a transition (W3C), when traced: the next attempt links to it. */
  readonly attemptTrace?: JobTraceCarrier;
}

export function isFinal(record: JobRecord): boolean {
  return record.status === JobStatus.Completed || record.status === JobStatus.Failed || record.status === JobStatus.Canceled;
}

/** `history` with `entry` appended, keeping the latest {@link MAX_HISTORY}. */
export function withAttempt(history: readonly AttemptRecord[] | undefined, entry: AttemptRecord): AttemptRecord[] {
  return [...(history ?? []), entry].slice(-MAX_HISTORY);
}

export function isExpired(record: JobRecord, now = Date.now()): boolean {
  return record.expiresAt !== undefined && record.expiresAt <= now;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeRecord(record: JobRecord): Uint8Array {
  return encoder.encode(JSON.stringify(record));
}

const STATUSES = new Set<string>(Object.values(JobStatus));

export function decodeRecord(bytes: Uint8Array): JobRecord | undefined {
  try {
    const value = JSON.parse(decoder.decode(bytes)) as Partial<JobRecord> | null;
    if (
      value === null ||
      typeof value !== "object" ||
      typeof value.id !== "string" ||
      typeof value.route !== "string" ||
      typeof value.status !== "string" ||
      !STATUSES.has(value.status) ||
      typeof value.attempts !== "number" ||
      typeof value.createdAt !== "number" ||
      typeof value.updatedAt !== "number"
    ) {
      return undefined;
    }
    return value as JobRecord;
  } catch {
    return undefined;
  }
}

/** The public JSON of a job, as the status URL answers it. */
export interface JobStatusBody {
  id: string;
  status: JobStatus;
  route: string;
  attempts: number;
  createdAt: string;
  updatedAt: string;
  statusUrl: string;
  resultUrl?: string;
  responseStatus?: number;
  error?: JobFailure;
  expiresAt?: string;
  history?: { attempt: number; startedAt: string; durationMs: number; outcome: string }[];
}

export function toStatusBody(record: JobRecord, statusUrl: string): JobStatusBody {
  const body: JobStatusBody = {
    id: record.id,
    status: record.status,
    route: record.route,
    attempts: record.attempts,
    createdAt: new Date(record.createdAt).toISOString(),
    updatedAt: new Date(record.updatedAt).toISOString(),
    statusUrl,
  };
  if (isFinal(record) && record.status !== JobStatus.Canceled) body.resultUrl = `${statusUrl}/result`;
  if (record.response) body.responseStatus = record.response.status;
  if (record.error) body.error = record.error;
  if (record.expiresAt !== undefined) body.expiresAt = new Date(record.expiresAt).toISOString();
  if (record.history && record.history.length > 0) {
    body.history = record.history.map((h) => ({ ...h, startedAt: new Date(h.startedAt).toISOString() }));
  }
  return body;
}
