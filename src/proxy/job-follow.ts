/**
 * Following one job for one client (long-poll, SSE, WebSocket): register with the watch, then read
 * the job (the lookup, with whatever checks it makes), then hand on every later transition in order,
 * the final one last. Events that arrive while the job is being read are kept and handed on only
 * when they are newer than what the read found (a final one always is).
 */
import { toStatusBody } from "../jobs/record.js";
import type { JobRecord, JobStatusBody } from "../jobs/record.js";
import type { JobWatch, Watcher } from "./job-watch.js";
import { isFinalStatus } from "./live-status.js";
import type { CachedJob } from "./result-cache.js";

/** A status to hand on: its JSON parsed, and the text it came as when it came as an event. */
export interface StatusUpdate {
  readonly body: JobStatusBody;
  readonly json?: string | undefined;
}

export interface Following {
  /** The job as read once the watch was live. */
  readonly record: JobRecord;
  /** Its status JSON. */
  readonly body: JobStatusBody;
  /**
   * Hands on, from now, the transitions after `record` (those that came meanwhile first); stops
   * after the final one. `onShutdown` is called instead when the proxy shuts down.
   */
  start(onUpdate: (update: StatusUpdate) => void, onShutdown: () => void): void;
  stop(): void;
}

function isNewer(body: JobStatusBody, than: JobStatusBody): boolean {
  return (isFinalStatus(body.status) && !isFinalStatus(than.status)) || Date.parse(body.updatedAt) > Date.parse(than.updatedAt);
}

/** Follows job `id`; rejects with what `find` rejects with (404, 410, 503), or when the watch is full or away. */
export async function followJob(deps: { watch: JobWatch; jobsPath: string }, id: string, find: () => Promise<CachedJob>): Promise<Following> {
  const statusUrl = `${deps.jobsPath}/${id}`;
  let onUpdate: ((update: StatusUpdate) => void) | undefined;
  let onShutdown: (() => void) | undefined;
  let shutDown = false;
  const early: StatusUpdate[] = [];
  let last: JobStatusBody | undefined;
  let done = false;
  let unwatch = (): void => undefined;

  function stop(): void {
    done = true;
    unwatch();
  }
  function deliver(update: StatusUpdate): void {
    if (done || !onUpdate) return;
    if (last && update.body.status === last.status && update.body.updatedAt === last.updatedAt) return;
    last = update.body;
    if (isFinalStatus(update.body.status)) stop();
    onUpdate(update);
  }
  function offer(update: StatusUpdate): void {
    if (onUpdate) deliver(update);
    else early.push(update);
  }
  const watcher: Watcher = {
    onEvent: (event) => offer({ body: event.body, json: event.json }),
    onResync() {
      find()
        .then(({ record }) => {
          const body = toStatusBody(record, statusUrl);
          if (last && isNewer(body, last)) offer({ body });
        })
        .catch(() => undefined);
    },
    onClose() {
      shutDown = true;
      done = true;
      onShutdown?.();
    },
  };

  unwatch = await deps.watch.watch(id, watcher);
  let found: CachedJob;
  try {
    found = await find();
  } catch (err) {
    unwatch();
    throw err;
  }
  const body = toStatusBody(found.record, statusUrl);
  last = body;
  if (isFinalStatus(body.status)) stop();
  return {
    record: found.record,
    body,
    start(handler, shutdownHandler) {
      onUpdate = handler;
      onShutdown = shutdownHandler;
      if (shutDown) return shutdownHandler();
      for (const update of early.splice(0)) if (isNewer(update.body, body)) deliver(update);
    },
    stop,
  };
}
