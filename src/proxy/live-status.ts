/**
 * The status JSON as the proxy answers it live: a pending job's gets `estimatedCompletion` (when the
 * proxy can estimate it) and a `Retry-After` from the estimate, capped by the route's `retryAfter`;
 * a final job's is sent as the status URL answers it, from a record or from its event.
 */
import type { ServerResponse } from "node:http";
import { routeTableOf } from "../config/index.js";
import type { Config } from "../config/index.js";
import { JobStatus, toStatusBody } from "../jobs/record.js";
import type { JobRecord, JobStatusBody } from "../jobs/record.js";
import { toRetryAfterS } from "./estimate.js";
import type { CompletionEstimator } from "./estimate.js";

export interface LiveStatus {
  /** A pending job's status JSON with its estimate, and the `Retry-After` (seconds) that goes with it. */
  pending(body: JobStatusBody, now?: number): { json: string; retryAfterS: number };
  /** The text to send for a status: the estimate added while pending, a final one as it is. */
  toJson(body: JobStatusBody, json?: string): string;
  /** Answers a pending job's status: 202, the estimate, `Retry-After`. */
  sendPending(res: ServerResponse, record: JobRecord): void;
  /** Answers a final job's status from its JSON: 303 to the result, or 200 when canceled. */
  sendFinal(res: ServerResponse, body: JobStatusBody, json?: string): void;
}

export function isFinalStatus(status: string): boolean {
  return status === JobStatus.Completed || status === JobStatus.Failed || status === JobStatus.Canceled;
}

export function createLiveStatus(deps: { config: () => Config; estimator: CompletionEstimator; jobsPath: string }): LiveStatus {
  const { estimator, jobsPath } = deps;

  function pending(body: JobStatusBody, now = Date.now()): { json: string; retryAfterS: number } {
    const route = routeTableOf(deps.config()).settingsOf(body.route);
    const eta = estimator.estimate(body, route, now);
    const live: JobStatusBody = eta === undefined ? body : { ...body, estimatedCompletion: new Date(eta).toISOString() };
    return { json: JSON.stringify(live), retryAfterS: toRetryAfterS(eta, route.retryAfterS, now) };
  }

  return {
    pending,
    toJson(body, json) {
      if (!isFinalStatus(body.status)) return pending(body).json;
      return json ?? JSON.stringify(body);
    },
    sendPending(res, record) {
      const { json, retryAfterS } = pending(toStatusBody(record, `${jobsPath}/${record.id}`));
      res.writeHead(202, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(json),
        "cache-control": "no-store",
        "retry-after": String(retryAfterS),
      });
      res.end(json);
    },
    sendFinal(res, body, json) {
      const text = json ?? JSON.stringify(body);
      const headers = ["content-type", "application/json", "content-length", String(Buffer.byteLength(text)), "cache-control", "no-store"];
      const canceled = body.status === JobStatus.Canceled;
      if (!canceled) headers.push("location", `${body.statusUrl}/result`);
      res.writeHead(canceled ? 200 : 303, headers).end(text);
    },
  };
}
