/**
 * What an accept does about the job's completion, beside queueing it: read `Prefer` (how long to
 * wait, which `Preference-Applied` to send) and `X-Callback-Url` (checked, 400 on refusal), hold the
 * request for the job when it waits, and answer: the job's result when it ended in time, else 202.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config, RouteConfig } from "../config/index.js";
import type { Logger } from "../log.js";
import type { JobStore } from "../jobs/store.js";
import { readCallbackUrl } from "./callback-header.js";
import type { JobWatch } from "./job-watch.js";
import { parsePrefer, toAcceptWait } from "./prefer.js";
import type { AcceptWait } from "./prefer.js";
import type { ResultCache } from "./result-cache.js";
import { holdForJob, replayFinal } from "./wait.js";
import type { PendingWait } from "./wait.js";

/** An accept's completion plan, read from the request before its body. */
export interface AcceptPlan {
  readonly wait: AcceptWait;
  /** The checked `X-Callback-Url`, to store with the job. */
  readonly callbackUrl: string | undefined;
}

export interface AcceptCompletion {
  /** Reads `Prefer` and checks `X-Callback-Url`; throws `BadRequestError` (400, nothing queued). */
  plan(req: IncomingMessage, route: RouteConfig): Promise<AcceptPlan>;
  /** For a plan that waits: registers for the job's end before the job is published. */
  hold(plan: AcceptPlan, id: string): Promise<PendingWait | undefined>;
  /** Answers an accepted job: `accepted(headers)` (the 202) at once or after the wait, or the job's result if it ended in time. */
  answer(res: ServerResponse, job: { id: string; statusUrl: string }, plan: AcceptPlan, held: PendingWait | undefined, accepted: (headers: Record<string, string>) => void): Promise<void>;
}

export interface AcceptCompletionDeps {
  watch: JobWatch;
  /** The config in force (a route's `resultHeaders` for a replayed result). */
  config: () => Config;
  store: () => JobStore | undefined;
  cache: ResultCache;
  log: Logger;
}

export function createAcceptCompletion(deps: AcceptCompletionDeps): AcceptCompletion {
  return {
    async plan(req, route) {
      const wait = toAcceptWait(route, parsePrefer(req.headers));
      return { wait, callbackUrl: await readCallbackUrl(req, route) };
    },
    async hold(plan, id) {
      return plan.wait.waitMs > 0 ? holdForJob(deps.watch, deps.store, id) : undefined;
    },
    async answer(res, job, plan, held, accepted) {
      const { acceptedApplied, replayApplied, waitMs } = plan.wait;
      const acceptedHeaders: Record<string, string> = acceptedApplied ? { "preference-applied": acceptedApplied } : {};
      if (!held) return accepted(acceptedHeaders);
      if (await held.settled(waitMs, res)) {
        const headers: Record<string, string> = { "content-location": job.statusUrl, ...(replayApplied ? { "preference-applied": replayApplied } : {}) };
        if (await replayFinal(deps, res, job.id, headers)) return;
      }
      if (res.destroyed) return;
      accepted(acceptedHeaders);
    },
  };
}
