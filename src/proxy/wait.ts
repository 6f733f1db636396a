/**
 * Wait-then-202: an accept that holds its request for the job (route `wait`, `Prefer: wait=N`).
 * The job is registered with the watch before it is published, so its completion cannot slip by
 * unseen; if it ends in time, the client gets what the result URL would answer (the backend's
 * response replayed exactly) plus `Content-Location`, else today's 202.
 */
import type { ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { isFinal } from "../jobs/record.js";
import type { JobRecord } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import { sendProblem } from "../shared/problem.js";
import { sendResult } from "./job-result.js";
import type { ResultDeps } from "./job-result.js";
import type { JobWatch } from "./job-watch.js";
import { isFinalStatus } from "./live-status.js";

/** Reads of a record an event said was final: a replica's read can lag the write it was told of. */
const FINAL_READ_TRIES = 4;
const FINAL_READ_PAUSE_MS = 25;

/** A job an accept waits for; registered before the job was published. */
export interface PendingWait {
  /** True once the job is final; false after `timeoutMs`, when the client went away first, or on shutdown. */
  settled(timeoutMs: number, res: ServerResponse): Promise<boolean>;
  /** Gives up waiting (the job was not published after all). */
  stop(): void;
}

/** Registers to hear job `id` end; `undefined` when this proxy cannot wait now (watch full, NATS away): answer 202 at once. */
export async function holdForJob(watch: JobWatch, store: () => JobStore | undefined, id: string): Promise<PendingWait | undefined> {
  let ended!: (final: boolean) => void;
  const final = new Promise<boolean>((resolve) => (ended = resolve));
  let unwatch: () => void;
  try {
    unwatch = await watch.watch(id, {
      onEvent: (event) => {
        if (isFinalStatus(event.body.status)) ended(true);
      },
      // Shutting down: answer 202 now.
      onClose: () => ended(false),
      onResync: () => {
        store()
          ?.readRecord(id)
          .then((found) => found && isFinal(found.record) && ended(true))
          .catch(() => undefined);
      },
    });
  } catch {
    return undefined;
  }
  return {
    async settled(timeoutMs, res) {
      let timer: NodeJS.Timeout | undefined;
      let gone: (() => void) | undefined;
      const late = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
        gone = () => resolve(false);
        res.once("close", gone);
      });
      try {
        return await Promise.race([final, late]);
      } finally {
        clearTimeout(timer);
        if (gone) res.off("close", gone);
        unwatch();
      }
    },
    stop: () => unwatch(),
  };
}

async function readFinal(store: JobStore, id: string): Promise<JobRecord | undefined> {
  for (let i = 0; i < FINAL_READ_TRIES; i++) {
    const found = await store.readRecord(id);
    if (found && isFinal(found.record)) return found.record;
    await sleep(FINAL_READ_PAUSE_MS);
  }
  return undefined;
}

/**
 * Answers a request with its finished job's result, as the result URL would, plus `headers`
 * (`Content-Location`, `Preference-Applied`). False when no final record could be read: answer 202.
 */
export async function replayFinal(
  deps: ResultDeps,
  res: ServerResponse,
  id: string,
  headers: Record<string, string>,
): Promise<boolean> {
  const store = deps.store();
  if (!store) return false;
  let record: JobRecord | undefined;
  try {
    record = await readFinal(store, id);
  } catch {
    return false;
  }
  if (!record) return false;
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  try {
    await sendResult(deps, res, record, deps.cache.get(id)?.body);
  } catch (err) {
    sendProblem(res, err, { log: deps.log });
  }
  return true;
}
