/**
 * The result URL: the backend's response replayed exactly (status, headers, body bytes), or the
 * job's failure as problem+json. Small bodies come from the record or the cache; large ones are
 * streamed from the Object Store at the pace the client reads them.
 *
 * Every answer here carries `X-Content-Type-Options: nosniff` and the route's `resultHeaders`
 * (which replace the backend's headers of the same names): a replayed response is served from
 * slowlane's origin, so a browser must not guess it into something executable.
 */
import type { ServerResponse } from "node:http";
import { pipeline, Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { routeTableOf } from "../config/index.js";
import type { Config } from "../config/index.js";
import { ErrorCodes, JobCanceledError, JobExpiredError, NatsUnavailableError, SlowlaneError, errorKindOf } from "../errors.js";
import type { ErrorCode } from "../errors.js";
import type { Logger } from "../log.js";
import { JobStatus } from "../jobs/record.js";
import type { JobRecord, StoredResponse } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { SealError } from "../security/seal.js";
import { sendProblem } from "../shared/problem.js";
import type { ResultCache } from "./result-cache.js";

export interface ResultDeps {
  /** The config in force: a route's `resultHeaders` as they are now. */
  config: () => Config;
  log: Logger;
  cache: ResultCache;
  store: () => JobStore | undefined;
}

/** Sent with every result answer; a route's `resultHeaders` may add others. */
const NOSNIFF = ["x-content-type-options", "nosniff"] as const;

/** Headers slowlane sets on results: nosniff, then the route's `resultHeaders`, as flat name/value pairs. */
function resultHeadersOf(deps: ResultDeps, record: JobRecord): string[] {
  const pairs: string[] = [...NOSNIFF];
  for (const [name, value] of routeTableOf(deps.config()).settingsOf(record.route).resultHeaders) pairs.push(name, value);
  return pairs;
}

/** The backend's headers without those slowlane sets itself (names in `ours`, lower-case). */
function withoutOurs(headers: readonly string[], ours: readonly string[]): string[] {
  const names = new Set<string>();
  for (let i = 0; i < ours.length; i += 2) names.add(ours[i] as string);
  const kept: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (!names.has((headers[i] as string).toLowerCase())) kept.push(headers[i] as string, headers[i + 1] as string);
  }
  return kept;
}

/** What stored data that cannot be opened answers: 500 with its code, the reason in the log only. */
function unreadable(deps: ResultDeps, record: JobRecord, reason: unknown): SlowlaneError {
  deps.log.error({ job: record.id, route: record.route, err: reason }, "a stored result cannot be decrypted with the configured keys");
  return new SlowlaneError(ErrorCodes.STORED_DATA_UNREADABLE, "the stored result cannot be decrypted with the keys configured now");
}

/** The failure a failed job's result URL answers with: the stored code, its status from the one table. */
function toFailureError(record: JobRecord): SlowlaneError {
  const failure = record.error ?? { code: ErrorCodes.UPSTREAM_UNREACHABLE, message: "the backend never answered" };
  // A code written by another version that this one does not know is still a gateway failure.
  const code = (errorKindOf(failure.code).status === undefined ? ErrorCodes.UPSTREAM_UNREACHABLE : failure.code) as ErrorCode;
  const extensions = { attempts: record.attempts, ...(failure.upstreamStatus ? { upstreamStatus: failure.upstreamStatus } : {}) };
  return new SlowlaneError(code, failure.message, { extensions });
}

async function readBody(deps: ResultDeps, record: JobRecord, response: StoredResponse): Promise<Uint8Array | ReadableStream<Uint8Array>> {
  const store = deps.store();
  if (!store) throw new NatsUnavailableError("the result store is unavailable, retry later");
  let body: Uint8Array | ReadableStream<Uint8Array> | undefined;
  try {
    body = await store.getBody(record.id, response);
  } catch (err) {
    if (err instanceof SealError) throw unreadable(deps, record, err);
    throw new NatsUnavailableError("the result store did not answer, retry later", { cause: err });
  }
  if (!body) throw new JobExpiredError();
  if (body instanceof Uint8Array) deps.cache.set(record, body);
  return body;
}

function pairsOf(flat: readonly string[]): [string, string][] {
  const pairs: [string, string][] = [];
  for (let i = 0; i < flat.length; i += 2) pairs.push([flat[i] as string, flat[i + 1] as string]);
  return pairs;
}

/** Sends a final job's result. */
export async function sendResult(deps: ResultDeps, res: ServerResponse, record: JobRecord, cachedBody: Uint8Array | undefined): Promise<void> {
  if (record.status === JobStatus.Canceled) throw new JobCanceledError();
  const ours = resultHeadersOf(deps, record);
  if (record.status === JobStatus.Failed) {
    sendProblem(res, toFailureError(record), { headers: { "x-slowlane-job-status": record.status, ...Object.fromEntries(pairsOf(ours)) } });
    return;
  }
  const response = record.response;
  if (!response) throw new Error(`completed job ${record.id} has no response`);
  if (response.unreadable !== undefined) throw unreadable(deps, record, response.unreadable);
  const body = cachedBody ?? (await readBody(deps, record, response));
  res.writeHead(response.status, [...withoutOurs(response.headers, ours), ...ours, "content-length", String(response.bodyBytes)]);
  if (body instanceof Uint8Array) {
    res.end(body);
    return;
  }
  streamBody(deps.log, res, record.id, body);
}

/**
 * Sends a body from the Object Store as the client takes it: `pipeline` stops pulling while the
 * socket is full, and the store stream reads a chunk only when pulled, so a client that stops
 * reading holds one chunk here, not the object. A client that goes away cancels the read.
 */
function streamBody(log: Logger, res: ServerResponse, id: string, body: ReadableStream<Uint8Array>): void {
  if (res.req.method === "HEAD") {
    // No body goes out on HEAD: do not read one.
    void body.cancel().catch(() => undefined);
    res.end();
    return;
  }
  const source = Readable.fromWeb(body as WebReadableStream<Uint8Array>, { highWaterMark: 1 });
  pipeline(source, res, (err) => {
    if (!err) return;
    if ((err as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE") {
      log.debug({ job: id }, "client went away mid-result; stopped reading it");
      return;
    }
    log.error({ err, job: id }, "streaming a stored body failed");
  });
}
