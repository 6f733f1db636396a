/**
 * The checker: polls every accepted job's status URL through the proxy until it is final or the
 * deadline passes, and classifies it. A 404 or 410 is "lost" at once: a client would give up
 * there. A 503 or no answer is the proxy still recovering, so the job is polled again.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { JOBS } from "../helpers/jobs.js";
import type { FaultAnswer } from "./fault-backend.js";
import { describeFailure } from "./proxy-client.js";
import type { ProxyAnswer, ProxyClient } from "./proxy-client.js";
import type { Accepted } from "./submitter.js";

export const Outcome = {
  Completed: "completed",
  Failed: "failed",
  Lost: "lost",
  /** Completed, but the stored response is not this job's. */
  Mismatched: "mismatched",
} as const;
export type Outcome = (typeof Outcome)[keyof typeof Outcome];

export interface Verdict {
  job: Accepted;
  outcome: Outcome;
  /** For anything but `completed`: the reason, or the last thing the proxy said. */
  detail: string;
}

export interface CheckOptions {
  client: ProxyClient;
  accepted: readonly Accepted[];
  /** Epoch ms: jobs not final by then are lost. */
  deadline: number;
  /** Status requests in flight at once. */
  concurrency?: number;
}

interface StatusBody {
  status?: string;
  responseStatus?: number;
  error?: { code?: string; message?: string };
}

function parseJson<T>(text: string): T | undefined {
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

/** A verdict, or a string saying why the job must be polled again. */
async function checkOne(client: ProxyClient, job: Accepted): Promise<Verdict | string> {
  const statusUrl = `${JOBS}/${job.id}`;
  let answer: ProxyAnswer;
  try {
    answer = await client.send("GET", statusUrl);
  } catch (err) {
    return `status: no answer (${describeFailure(undefined, err)})`;
  }
  const status = parseJson<StatusBody>(answer.body);
  if (answer.status === 404 || answer.status === 410) {
    return { job, outcome: Outcome.Lost, detail: `status URL answered ${answer.status}: ${answer.body}` };
  }
  if (answer.status !== 303) return `status ${answer.status}: ${answer.body.slice(0, 300)}`;
  if (status?.status === "failed") {
    return { job, outcome: Outcome.Failed, detail: `${status.error?.code ?? "?"}: ${status.error?.message ?? answer.body}` };
  }
  if (status?.status !== "completed") return `303 with an unexpected body: ${answer.body.slice(0, 300)}`;

  let result: ProxyAnswer;
  try {
    result = await client.send("GET", `${statusUrl}/result`);
  } catch (err) {
    return `result: no answer (${describeFailure(undefined, err)})`;
  }
  if (result.status === 503) return `result 503: ${result.body.slice(0, 300)}`;
  if (result.status === 404 || result.status === 410) {
    return { job, outcome: Outcome.Lost, detail: `completed, but the result URL answered ${result.status}: ${result.body}` };
  }
  const body = parseJson<FaultAnswer>(result.body);
  if (result.status !== 200 || body?.token !== job.token || body.try !== job.tryNo) {
    return {
      job,
      outcome: Outcome.Mismatched,
      detail: `result ${result.status} (record says ${status.responseStatus ?? "?"}): ${result.body.slice(0, 300)}`,
    };
  }
  return { job, outcome: Outcome.Completed, detail: "" };
}

export async function checkJobs(options: CheckOptions): Promise<Verdict[]> {
  const { client } = options;
  const verdicts: Verdict[] = [];
  const lastSeen = new Map<string, string>();
  let pending = [...options.accepted];
  while (pending.length > 0) {
    const queue = [...pending];
    const again: Accepted[] = [];
    const lane = async (): Promise<void> => {
      for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
        const result = await checkOne(client, job);
        if (typeof result === "string") {
          lastSeen.set(job.id, result);
          again.push(job);
        } else {
          verdicts.push(result);
        }
      }
    };
    await Promise.all(Array.from({ length: options.concurrency ?? 16 }, lane));
    pending = again;
    if (pending.length === 0) break;
    if (Date.now() >= options.deadline) {
      for (const job of pending) {
        verdicts.push({ job, outcome: Outcome.Lost, detail: `never final by the deadline; last: ${lastSeen.get(job.id) ?? "?"}` });
      }
      break;
    }
    await sleep(250);
  }
  return verdicts;
}
