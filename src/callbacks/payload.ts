/**
 * The JSON a callback carries: Standard Webhooks' recommended envelope, `type`, `timestamp`, `data`,
 * with the job's status JSON (what its status URL answers) as `data`, so a receiver needs no second read.
 */
import type { JobStatus } from "../jobs/record.js";

/** The statuses a job ends in; a callback is sent for each. */
export type FinalJobStatus = Extract<JobStatus, "completed" | "failed" | "canceled">;

export const CallbackEventType = {
  Completed: "job.completed",
  Failed: "job.failed",
  Canceled: "job.canceled",
} as const;
export type CallbackEventType = (typeof CallbackEventType)[keyof typeof CallbackEventType];

export interface CallbackEvent {
  readonly type: CallbackEventType;
  /** When the job became final, ISO 8601 UTC. */
  readonly timestamp: string;
  readonly data: object;
}

const TYPES: Record<FinalJobStatus, CallbackEventType> = {
  completed: CallbackEventType.Completed,
  failed: CallbackEventType.Failed,
  canceled: CallbackEventType.Canceled,
};

/**
 * The event for a job that became final at `now`. Serialise it once and keep the string with the
 * delivery: every retry then sends the same bytes, which receivers that hash bodies expect.
 */
export function toCallbackEvent(status: FinalJobStatus, statusJson: object, now: Date): CallbackEvent {
  return { type: TYPES[status], timestamp: now.toISOString(), data: statusJson };
}
