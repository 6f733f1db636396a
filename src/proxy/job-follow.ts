/**
 * Following one job for one client (long-poll, SSE, WebSocket): register with the watch, then read
 * the job (the lookup, with whatever checks it makes), then hand on every later transition in order,
 * the final one last. Events that arrive while the job is being read are kept and handed on only
 * when they are newer than what the read found (a final one always is).
 *
 * Thousands of clients may follow at once, each for minutes: a follower is one small object (its
 * methods on the prototype, no closures of its own) that keeps only the status and time of the
 * latest state it handed on.
 */
import { toStatusBody } from "../jobs/record.js";
import type { JobRecord, JobStatusBody } from "../jobs/record.js";
import type { JobEvent, JobWatch, Watcher } from "./job-watch.js";
import { isFinalStatus } from "./live-status.js";
import type { CachedJob } from "./result-cache.js";

/** A status to hand on: its JSON parsed, and the text it came as when it came as an event. */
export interface StatusUpdate {
  readonly body: JobStatusBody;
  readonly json?: string | undefined;
}

type Mark = Pick<JobStatusBody, "status" | "updatedAt">;

function isNewer(body: Mark, than: Mark): boolean {
  return (isFinalStatus(body.status) && !isFinalStatus(than.status)) || Date.parse(body.updatedAt) > Date.parse(than.updatedAt);
}

/** One client's follow of one job; the watch calls it as a {@link Watcher}. */
export class JobFollower implements Watcher {
  private onUpdate: ((update: StatusUpdate) => void) | undefined;
  private onShutdown: (() => void) | undefined;
  /** Events that came before `start`. */
  private early: StatusUpdate[] | undefined;
  /** The latest state read or handed on. */
  private last: Mark | undefined;
  /** The state `start` compares early events with. */
  private initial: Mark | undefined;
  private done = false;
  private shutDown = false;
  unwatch: (() => void) | undefined;

  constructor(
    private readonly statusUrl: string,
    private readonly find: () => Promise<CachedJob>,
  ) {}

  /** Records the state read after the watch was live; stops at once when it is final. */
  begin(body: JobStatusBody): void {
    this.last = this.initial = { status: body.status, updatedAt: body.updatedAt };
    if (isFinalStatus(body.status)) this.stop();
  }

  onEvent(event: JobEvent): void {
    this.offer({ body: event.body, json: event.json });
  }

  onResync(): void {
    this.find()
      .then(({ record }) => {
        const body = toStatusBody(record, this.statusUrl);
        if (this.last && isNewer(body, this.last)) this.offer({ body });
      })
      .catch(() => undefined);
  }

  onClose(): void {
    this.shutDown = true;
    this.done = true;
    this.onShutdown?.();
  }

  /**
   * Hands on, from now, the transitions after the state read (those that came meanwhile first);
   * stops after the final one. `onShutdown` is called instead when the proxy shuts down.
   */
  start(onUpdate: (update: StatusUpdate) => void, onShutdown: () => void): void {
    this.onUpdate = onUpdate;
    this.onShutdown = onShutdown;
    if (this.shutDown) return onShutdown();
    const early = this.early ?? [];
    this.early = undefined;
    for (const update of early) if (this.initial && isNewer(update.body, this.initial)) this.deliver(update);
  }

  stop(): void {
    this.done = true;
    this.unwatch?.();
  }

  private offer(update: StatusUpdate): void {
    if (this.onUpdate) this.deliver(update);
    else if (!this.done) (this.early ??= []).push(update);
  }

  private deliver(update: StatusUpdate): void {
    if (this.done || !this.onUpdate) return;
    const { status, updatedAt } = update.body;
    if (this.last && status === this.last.status && updatedAt === this.last.updatedAt) return;
    this.last = { status, updatedAt };
    if (isFinalStatus(status)) this.stop();
    this.onUpdate(update);
  }
}

/** A follow that has begun: the job as read once the watch was live, and the follower to start. */
export interface Following {
  readonly record: JobRecord;
  /** The record's status JSON. */
  readonly body: JobStatusBody;
  readonly follower: JobFollower;
}

/** Follows job `id`; rejects with what `find` rejects with (404, 410, 503), or when the watch is full or away. */
export async function followJob(deps: { watch: JobWatch; jobsPath: string }, id: string, find: () => Promise<CachedJob>): Promise<Following> {
  const statusUrl = `${deps.jobsPath}/${id}`;
  const follower = new JobFollower(statusUrl, find);
  follower.unwatch = await deps.watch.watch(id, follower);
  let found: CachedJob;
  try {
    found = await find();
  } catch (err) {
    follower.stop();
    throw err;
  }
  const body = toStatusBody(found.record, statusUrl);
  follower.begin(body);
  return { record: found.record, body, follower };
}
