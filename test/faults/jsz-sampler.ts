/**
 * Samples nats-server's monitoring endpoint (`/jsz?consumers=true`) once a second while a run
 * goes on, for diagnosing stalls: the route consumer's ack-pending, pending and waiting pulls
 * next to the fault timeline. Diagnostics only (written with the logs); nothing asserts on it.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { request } from "undici";

interface JszConsumer {
  name: string;
  stream_name: string;
  num_ack_pending: number;
  num_redelivered: number;
  num_waiting: number;
  num_pending: number;
  delivered?: { stream_seq: number };
  ack_floor?: { stream_seq: number };
}

interface Jsz {
  account_details?: { stream_detail?: { name: string; state?: { msgs: number }; consumer_detail?: JszConsumer[] }[] }[];
}

export interface JszSampler {
  /** Stops sampling; resolves with one line per sample. */
  stop(): Promise<string[]>;
}

export function startJszSampler(monitorUrl: string, stream: string): JszSampler {
  const lines: string[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const at = new Date().toISOString();
      try {
        const res = await request(`${monitorUrl}/jsz?consumers=true`, { headersTimeout: 1_000, bodyTimeout: 1_000 });
        const jsz = (await res.body.json()) as Jsz;
        const detail = jsz.account_details?.flatMap((a) => a.stream_detail ?? []).find((s) => s.name === stream);
        const consumers = (detail?.consumer_detail ?? []).map(
          (c) =>
            `${c.name} ack_pending=${c.num_ack_pending} pending=${c.num_pending} waiting=${c.num_waiting} ` +
            `redelivered=${c.num_redelivered} delivered=${c.delivered?.stream_seq ?? "?"} ack_floor=${c.ack_floor?.stream_seq ?? "?"}`,
        );
        lines.push(`${at} stream_msgs=${detail?.state?.msgs ?? "?"} ${consumers.join(" | ")}`);
      } catch (err) {
        lines.push(`${at} unavailable (${err instanceof Error ? err.message : String(err)})`);
      }
      await sleep(1_000);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return lines;
    },
  };
}
