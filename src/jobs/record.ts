/**
 * The job record: the one JSON document per job, in the jobs KV bucket, that every proxy replica
 * reads to answer a status URL. Workers write it at each transition; the proxy never does.
 */
import type { ErrorCode } from "../errors.js";
import { messageOf } from "../errors.js";
import { isJobOwner } from "../security/owner-identity.js";
import type { JobOwner } from "../security/owner-identity.js";
import type { Sealer } from "../security/seal.js";
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
  /**
   * Read back from a record stored with a key file: the head (headers, inline body) was sealed, and
   * so is the body in the results bucket or Object Store (open it with the job id).
   */
  readonly sealed?: true;
  /** Read back sealed but could not be opened (why): `headers` is empty and the result is not served. */
  readonly unreadable?: string;
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

/** How a job's callback delivery stands: `pending` until delivered or given up. */
export const CallbackStatus = { Pending: "pending", Delivered: "delivered", Failed: "failed" } as const;
export type CallbackStatus = (typeof CallbackStatus)[keyof typeof CallbackStatus];

/**
 * The callback a client asked for with `X-Callback-Url`, and its delivery. Kept in the record so the
 * status URL shows it; reset to `pending` at each final transition (a requeued job that ends again
 * gets a callback again).
 */
export interface CallbackState {
  /** The URL `checkCallbackUrl` allowed at accept. */
  readonly url: string;
  readonly status: CallbackStatus;
  /** Deliveries tried so far for the job's latest final status. */
  readonly attempts: number;
  /** Why the latest attempt did not deliver (names the callback's host and a status or error code only). */
  readonly lastError?: string;
}

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
  /** Who submitted the job (from its envelope); absent: anyone with the id may see it. */
  readonly owner?: JobOwner;
  /** Keyed hash of method, URL and body of a request sent with an `Idempotency-Key` (from its envelope). */
  readonly fingerprint?: string;
  /** The callback asked for at accept (`X-Callback-Url`), and how its delivery goes. */
  readonly callback?: CallbackState;
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

/** The sealed part of a stored response: what the backend said, beyond its status and size. */
interface ResponseHead {
  headers: readonly string[];
  inline?: string;
}

/** A response as stored with a sealer: status, size and location plain, the head sealed (`head`, base64). */
function toStoredResponse(id: string, response: StoredResponse, sealer: Sealer): Record<string, unknown> {
  const { status, bodyBytes, body, headers, inline } = response;
  const head: ResponseHead = { headers, ...(inline === undefined ? {} : { inline }) };
  return { status, bodyBytes, body, head: sealer.seal(encoder.encode(JSON.stringify(head)), id).toString("base64") };
}

/**
 * The record as stored. With `sealer` (a key file is configured), the response's headers and inline
 * body are sealed for the job's id; the status code, size and everything else stay readable.
 */
export function encodeRecord(record: JobRecord, sealer?: Sealer): Uint8Array {
  if (!sealer || !record.response) return encoder.encode(JSON.stringify(record));
  return encoder.encode(JSON.stringify({ ...record, response: toStoredResponse(record.id, record.response, sealer) }));
}

function isResponseHead(value: unknown): value is ResponseHead {
  if (typeof value !== "object" || value === null) return false;
  const head = value as Record<string, unknown>;
  return Array.isArray(head.headers) && head.headers.every((h) => typeof h === "string") && (head.inline === undefined || typeof head.inline === "string");
}

/** A stored response read back: opened when its head is sealed, or marked unreadable. */
function readResponse(id: string, stored: Record<string, unknown>, sealer: Sealer | undefined): StoredResponse {
  if (typeof stored.head !== "string") return stored as unknown as StoredResponse;
  const { head: sealedHead, ...rest } = stored;
  const base = { ...(rest as unknown as Omit<StoredResponse, "headers">), headers: [] as string[], sealed: true as const };
  if (!sealer) return { ...base, unreadable: "the result is encrypted and no key file is configured" };
  try {
    const head: unknown = JSON.parse(decoder.decode(sealer.open(Buffer.from(sealedHead, "base64"), id)));
    if (!isResponseHead(head)) return { ...base, unreadable: "the stored response head is malformed" };
    return { ...base, headers: head.headers, ...(head.inline === undefined ? {} : { inline: head.inline }) };
  } catch (err) {
    return { ...base, unreadable: messageOf(err) };
  }
}

const STATUSES = new Set<string>(Object.values(JobStatus));

/**
 * A stored record read back, `undefined` when it is not one. A sealed response head is opened with
 * `sealer`; when it cannot be (no key, a removed key, changed bytes) the record is still returned,
 * its response marked `unreadable`: the status URL works, the result answers 500.
 */
export function decodeRecord(bytes: Uint8Array, sealer?: Sealer): JobRecord | undefined {
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
      typeof value.updatedAt !== "number" ||
      (value.owner !== undefined && !isJobOwner(value.owner)) ||
      (value.fingerprint !== undefined && typeof value.fingerprint !== "string")
    ) {
      return undefined;
    }
    const response = value.response as unknown;
    if (typeof response !== "object" || response === null) return value as JobRecord;
    return { ...(value as JobRecord), response: readResponse(value.id, response as Record<string, unknown>, sealer) };
  } catch {
    return undefined;
  }
}

/** Where to go next from a status answer: URL paths relative to the host the client used. */
export interface JobLinks {
  /** The status URL itself. */
  self: string;
  /** The result URL (`202` while pending, the backend's answer replayed once completed). */
  result: string;
  /** `DELETE` here cancels the job (or deletes a finished one). */
  cancel: string;
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
  /** While pending, when the proxy expects the job to finish (ISO time), when it can estimate it. */
  estimatedCompletion?: string;
  callback?: { status: CallbackStatus; attempts: number; lastError?: string };
  links: JobLinks;
}

export function toStatusBody(record: JobRecord, statusUrl: string): JobStatusBody {
  // Built on every transition (the job's event) and every pending poll: one object, its keys in
  // their JSON order, `links` added last rather than spread into a copy.
  const createdAt = new Date(record.createdAt).toISOString();
  const body: Omit<JobStatusBody, "links"> & { links?: JobLinks } = {
    id: record.id,
    status: record.status,
    route: record.route,
    attempts: record.attempts,
    createdAt,
    updatedAt: record.updatedAt === record.createdAt ? createdAt : new Date(record.updatedAt).toISOString(),
    statusUrl,
  };
  if (isFinal(record) && record.status !== JobStatus.Canceled) body.resultUrl = `${statusUrl}/result`;
  if (record.response) body.responseStatus = record.response.status;
  if (record.error) body.error = record.error;
  if (record.expiresAt !== undefined) body.expiresAt = new Date(record.expiresAt).toISOString();
  if (record.history && record.history.length > 0) {
    body.history = record.history.map((h) => ({ ...h, startedAt: new Date(h.startedAt).toISOString() }));
  }
  if (record.callback) {
    const { status, attempts, lastError } = record.callback;
    body.callback = lastError === undefined ? { status, attempts } : { status, attempts, lastError };
  }
  body.links = { self: statusUrl, result: `${statusUrl}/result`, cancel: statusUrl };
  return body as JobStatusBody;
}
