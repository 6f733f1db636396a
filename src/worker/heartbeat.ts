/**
 * The heartbeat of a running call: `working()` on its message, so JetStream does not hand the job
 * to another worker while the call runs, and a hook to keep the job's record from ageing out.
 *
 * The period is read again at every tick, so a hot reload that lowers `nats.ackWait` takes effect
 * at the next tick; `beat()` sends one at once and starts a new period, for a reload that is
 * about to lower the consumer's AckWait (see the forwarder's `prepare`).
 */
import type { JsMsg } from "@nats-io/jetstream";

export interface Heartbeat {
  /** Sends one now (and runs the tick hook), then the next after a new period. */
  beat(): Promise<void>;
  stop(): void;
}

export interface HeartbeatOptions {
  msg: Pick<JsMsg, "working">;
  /** The period in force now, in ms: read at every tick. */
  periodMs: () => number;
  /** Runs at every tick after `working()`; must not throw. */
  onTick?: () => Promise<void>;
}

/** Starts heartbeating at once (first tick after one period). */
export function startHeartbeat(options: HeartbeatOptions): Heartbeat {
  const { msg, periodMs, onTick } = options;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  async function tick(): Promise<void> {
    if (stopped) return;
    msg.working();
    await onTick?.();
  }
  function schedule(): void {
    timer = setTimeout(() => {
      schedule();
      void tick();
    }, periodMs());
  }
  schedule();

  return {
    async beat() {
      if (stopped) return;
      clearTimeout(timer);
      schedule();
      await tick();
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
