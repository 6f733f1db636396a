/**
 * Server-Sent Events on the status URL (`Accept: text/event-stream`): one `event: status` with the
 * status JSON at once, one per transition, the last when the job is final, then the stream ends.
 * Each event's `id` names the state it shows: a client reconnecting with `Last-Event-ID` gets the
 * current state at once, and one that already saw the final state gets `204` (EventSource then stops
 * reconnecting). `retry` is the route's `retryAfter`; a comment every 15 s keeps proxies from cutting
 * the stream.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { routeTableOf } from "../config/index.js";
import type { Config } from "../config/index.js";
import type { JobStatusBody } from "../jobs/record.js";
import { rawHeader } from "../shared/raw-header.js";
import { followJob } from "./job-follow.js";
import type { JobWatch } from "./job-watch.js";
import { KeepAlive } from "./keep-alive.js";
import { isFinalStatus } from "./live-status.js";
import type { LiveStatus } from "./live-status.js";
import type { CachedJob } from "./result-cache.js";

/** Between two comment lines on an idle stream. */
export const KEEPALIVE_MS = 15_000;

export interface StreamDeps {
  watch: JobWatch;
  live: LiveStatus;
  jobsPath: string;
  config: () => Config;
  /** Writes the comment line of every open stream. */
  keepAlive: KeepAlive<ServerResponse>;
}

/** The keep-alive of SSE streams: a comment line each {@link KEEPALIVE_MS}. */
export function createStreamKeepAlive(): KeepAlive<ServerResponse> {
  return new KeepAlive<ServerResponse>(KEEPALIVE_MS, (res) => res.write(": keep-alive\n\n"));
}

/** Whether a request asks for an event stream. */
export function wantsEventStream(req: IncomingMessage): boolean {
  return rawHeader(req.rawHeaders, "accept")?.includes("text/event-stream") === true;
}

/** The `id` of the event showing `body`: its update time and status. */
export function toEventId(body: Pick<JobStatusBody, "updatedAt" | "status">): string {
  return `${Date.parse(body.updatedAt)}-${body.status}`;
}

function toFrame(body: JobStatusBody, json: string, retryMs?: number): string {
  const retry = retryMs === undefined ? "" : `retry: ${retryMs}\n`;
  return `${retry}event: status\nid: ${toEventId(body)}\ndata: ${json}\n\n`;
}

/** Streams job `id`'s status to an SSE client; rejects (before anything is sent) with what `find` rejects with. */
export async function streamStatus(deps: StreamDeps, req: IncomingMessage, res: ServerResponse, id: string, find: () => Promise<CachedJob>): Promise<void> {
  // Only the follower is kept for the stream's life: the record and its JSON go once sent.
  const { body, follower } = await followJob(deps, id, find);
  const final = isFinalStatus(body.status);
  if (final && req.headers["last-event-id"] === toEventId(body)) {
    res.writeHead(204, { "cache-control": "no-store" }).end();
    return;
  }
  const retryMs = routeTableOf(deps.config()).settingsOf(body.route).retryAfterS * 1_000;
  res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store", "x-accel-buffering": "no" });
  res.write(toFrame(body, deps.live.toJson(body), retryMs));
  if (final) {
    res.end();
    return;
  }
  const { keepAlive, live } = deps;
  keepAlive.add(res);
  res.once("close", () => {
    keepAlive.delete(res);
    follower.stop();
  });
  const end = () => {
    keepAlive.delete(res);
    res.end();
  };
  follower.start(
    (update) => {
      res.write(toFrame(update.body, live.toJson(update.body, update.json)));
      if (isFinalStatus(update.body.status)) end();
    },
    // Shutting down: the client reconnects (to another replica) with Last-Event-ID.
    end,
  );
}
