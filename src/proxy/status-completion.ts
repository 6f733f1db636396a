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

export interface StatusCompletion {
  readonly live: LiveStatus;
  readonly sockets: StatusSockets;
  /** Whether a `GET` on a status URL asks to stream or to wait: a plain poll is answered without {@link serve}. */
  wants(req: IncomingMessage): boolean;
  /** Serves a `GET` on a status URL that streams or waits; false when it is a plain poll. */
  serve(req: IncomingMessage, res: ServerResponse, id: string, find: () => Promise<CachedJob>): Promise<boolean>;
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
    wants(req) {
      if (wantsEventStream(req)) return true;
      const { waitMs } = parsePrefer({ prefer: rawHeader(req.rawHeaders, "prefer") });
      return waitMs !== undefined && waitMs > 0;
    },
    async serve(req, res, id, find) {
      if (wantsEventStream(req)) {
        await streamStatus(streams, req, res, id, find);
        return true;
      }
      const { waitMs } = parsePrefer({ prefer: rawHeader(req.rawHeaders, "prefer") });
      if (waitMs === undefined || waitMs === 0) return false;
      await longPoll(answers, res, waitMs, id, find);
      return true;
    },
    close() {
      watch.close();
      sockets.close();
    },
  };
}
