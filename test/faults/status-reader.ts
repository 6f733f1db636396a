/**
 * A second client that polls the status URLs of jobs already accepted while the faults happen,
 * as real clients do. A 503 or no answer is fine (the proxy or NATS is down and says so); a 404
 * or 410 for an accepted job is not: a client would take it as "this job does not exist".
 */
import { setTimeout as sleep } from "node:timers/promises";
import { JOBS } from "../helpers/jobs.js";
import type { ProxyClient } from "./proxy-client.js";
import type { Random } from "./random.js";
import type { Accepted } from "./submitter.js";

export interface StatusAnomaly {
  job: Accepted;
  /** Epoch ms of the answer, to set beside the fault timeline. */
  at: number;
  status: number;
  body: string;
}

export interface StatusReader {
  /** Status reads answered so far. */
  readonly reads: number;
  readonly anomalies: readonly StatusAnomaly[];
  /** Stops polling; resolves when the last read has returned. */
  stop(): Promise<void>;
}

export function startStatusReader(options: {
  client: ProxyClient;
  random: Random;
  /** The submitter's live list of accepted jobs. */
  accepted: readonly Accepted[];
  /** Reads in flight at once. */
  concurrency?: number;
}): StatusReader {
  const { client, random, accepted } = options;
  const anomalies: StatusAnomaly[] = [];
  let reads = 0;
  let stopped = false;

  async function lane(): Promise<void> {
    while (!stopped) {
      // Mostly recent jobs (queued or running, where the lookup is hardest), sometimes any.
      const recent = Math.max(0, accepted.length - 300);
      const from = random() < 0.7 ? recent : 0;
      const job = accepted[from + Math.floor(random() * (accepted.length - from))];
      if (job === undefined) {
        await sleep(50);
        continue;
      }
      const answer = await client.send("GET", `${JOBS}/${job.id}`).catch(() => undefined);
      if (answer) reads += 1;
      if (answer?.status === 404 || answer?.status === 410) {
        anomalies.push({ job, at: Date.now(), status: answer.status, body: answer.body });
      }
      await sleep(5);
    }
  }

  const lanes = Promise.all(Array.from({ length: options.concurrency ?? 2 }, lane));
  return {
    get reads() {
      return reads;
    },
    anomalies,
    async stop() {
      stopped = true;
      await lanes;
    },
  };
}
