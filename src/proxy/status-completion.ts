/**
 * The ways a client learns on the status URL that its job is done, besides polling: long-poll
 * (`Prefer: wait=N`), Server-Sent Events (`Accept: text/event-stream`) and WebSocket (an upgrade),
 * all fed by the proxy's one job watch. Each reads the job through the jobs endpoints' lookup, so
 * whatever it checks applies to these too.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Config } from "../config/index.js";
import type { Logger } from "../log.js";
import { rawHeader } from "../shared/raw-header.js";
import type { JobRecord } from "../jobs/record.js";
import type { CompletionEstimator } from "./estimate.js";
import type { JobWatch } from "./job-watch.js";
import { createLiveStatus } from "./live-status.js";
import type { LiveStatus } from "./live-status.js";
import { longPoll } from "./long-poll.js";
import { parsePrefer } from "./prefer.js";
import type { CachedJob } from "./result-cache.js";
import { createStatusSockets } from "./status-socket.js";
import type { StatusSockets } from "./status-socket.js";
import { createStreamKeepAlive, streamStatus, wantsEventStream } from "./status-stream.js";

export interface StatusCompletionDeps {
  config: () => Config;
  log: Logger;
  jobsPath: string;
  watch: JobWatch;
  estimator: CompletionEstimator;
  /** The status URL's answer for a final record. */
  sendFinalRecord(res: ServerResponse, record: JobRecord): void;
}

/** A status request that streams its job's transitions (SSE), or waits up to `waitMs` for the next one (long-poll). */
export type StatusFollow = { readonly kind: "stream" } | { readonly kind: "wait"; readonly waitMs: number };

const STREAM: StatusFollow = { kind: "stream" };

export interface StatusCompletion {
  readonly live: LiveStatus;
  readonly sockets: StatusSockets;
  /** How a `GET` on a status URL asks to follow its job; `undefined` for a plain poll, answered without {@link serve}. */
  followOf(req: IncomingMessage): StatusFollow | undefined;
  /** Serves a `GET` on a status URL that streams or waits, as {@link followOf} found it asks. */
  serve(follow: StatusFollow, req: IncomingMessage, res: ServerResponse, id: string, find: () => Promise<CachedJob>): Promise<void>;
  /** Ends every stream and socket and answers every long-poll (shutdown). */
  close(): void;
}

export function createStatusCompletion(deps: StatusCompletionDeps): StatusCompletion {
  const { config, log, jobsPath, watch } = deps;
  const live = createLiveStatus({ config, estimator: deps.estimator, jobsPath });
  const sockets = createStatusSockets({ watch, live, jobsPath, log });
  const answers = { watch, live, jobsPath, sendFinalRecord: deps.sendFinalRecord };
  const streams = { watch, live, jobsPath, config, keepAlive: createStreamKeepAlive() };
  return {
    live,
    sockets,
    followOf(req) {
      if (wantsEventStream(req)) return STREAM;
      const { waitMs } = parsePrefer({ prefer: rawHeader(req.rawHeaders, "prefer") });
      return waitMs === undefined || waitMs === 0 ? undefined : { kind: "wait", waitMs };
    },
    async serve(follow, req, res, id, find) {
      if (follow.kind === "stream") await streamStatus(streams, req, res, id, find);
      else await longPoll(answers, res, follow.waitMs, id, find);
    },
    close() {
      watch.close();
      sockets.close();
    },
  };
}
