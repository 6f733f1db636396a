/**
 * Long-poll: `GET <status URL>` with `Prefer: wait=N` is held until the job is final or N seconds
 * (at most 60) pass, then answered as a poll is (303 when done, 202 when not). The final answer is
 * sent as soon as the job's final event arrives, from the event itself: no further read.
 */
import type { ServerResponse } from "node:http";
import { WaitLimitError } from "../errors.js";
import { isFinal } from "../jobs/record.js";
import type { JobRecord } from "../jobs/record.js";
import { followJob } from "./job-follow.js";
import type { Following, StatusUpdate } from "./job-follow.js";
import type { JobWatch } from "./job-watch.js";
import { isFinalStatus } from "./live-status.js";
import type { LiveStatus } from "./live-status.js";
import type { CachedJob } from "./result-cache.js";

export interface StatusAnswerDeps {
  watch: JobWatch;
  live: LiveStatus;
  jobsPath: string;
  /** The status URL's answer for a final record (303 to the result, or 200 when canceled). */
  sendFinalRecord(res: ServerResponse, record: JobRecord): void;
}

/** Answers a job's status as a poll does. */
export function answerStatus(deps: StatusAnswerDeps, res: ServerResponse, record: JobRecord): void {
  if (isFinal(record)) deps.sendFinalRecord(res, record);
  else deps.live.sendPending(res, record);
}

/** Holds a status request up to `waitMs` for job `id` to end, then answers it. */
export async function longPoll(deps: StatusAnswerDeps, res: ServerResponse, waitMs: number, id: string, find: () => Promise<CachedJob>): Promise<void> {
  let following: Following;
  try {
    following = await followJob(deps, id, find);
  } catch (err) {
    // No room to wait here: an ordinary poll.
    if (!(err instanceof WaitLimitError)) throw err;
    return answerStatus(deps, res, (await find()).record);
  }
  if (isFinal(following.record)) return answerStatus(deps, res, following.record);
  const final = await new Promise<StatusUpdate | undefined>((resolve) => {
    const settle = (update: StatusUpdate | undefined) => {
      clearTimeout(timer);
      res.off("close", gone);
      resolve(update);
    };
    const timer = setTimeout(() => settle(undefined), waitMs);
    const gone = () => settle(undefined);
    res.once("close", gone);
    following.follower.start(
      (update) => {
        if (isFinalStatus(update.body.status)) settle(update);
      },
      () => settle(undefined),
    );
  });
  following.follower.stop();
  if (res.destroyed) return;
  if (final) return deps.live.sendFinal(res, final.body, final.json);
  answerStatus(deps, res, (await find()).record);
}
