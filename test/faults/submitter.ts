/**
 * The client: submits one job per token with modest concurrency, retrying a submission that got
 * no answer or a 503 under a new try number. Only a 202 is a promise; a submission that never got
 * one is "not accepted", even if the proxy persisted it before it died (the backend may then see
 * that try too: it is reported, not held against anyone).
 *
 * Submissions are paced by the backlog (accepted but not yet answered by the backend), so they
 * spread over the whole run and the faults hit accepting and forwarding alike.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { JOBS } from "../helpers/jobs.js";
import { toSubmissionKey } from "./fault-backend.js";
import type { FaultBackend } from "./fault-backend.js";
import { describeFailure } from "./proxy-client.js";
import type { ProxyAnswer, ProxyClient } from "./proxy-client.js";
import type { Random } from "./random.js";

/** A submission that got its 202. */
export interface Accepted {
  token: string;
  tryNo: number;
  /** `<token>#<try>`, the backend's key. */
  key: string;
  id: string;
}

/** A submission that got no 202, and why (`503`, `ECONNREFUSED`, `UND_ERR_SOCKET`...). */
export interface NotAccepted {
  key: string;
  reason: string;
}

export interface SubmitOptions {
  client: ProxyClient;
  backend: FaultBackend;
  random: Random;
  jobs: number;
  /** Submissions in flight at once. */
  concurrency: number;
  /** Accepted jobs the backend has not answered yet, at most, before submitting more. */
  maxBacklog: number;
  /** Epoch ms after which tokens still unaccepted are given up. */
  deadline: number;
}

export interface Submitter {
  /** Accepted so far, in order; the nemesis spaces its faults by their number. */
  readonly accepted: readonly Accepted[];
  /** Submissions waiting for their answer right now. */
  readonly inFlight: number;
  /** Resolves when every token is accepted or given up. */
  readonly done: Promise<SubmitReport>;
}

export interface SubmitReport {
  accepted: Accepted[];
  notAccepted: NotAccepted[];
  /** Tokens still without a 202 at the deadline, or when the submitter gave up. */
  givenUp: string[];
  /** Why the submitter stopped early: too many answers that are neither 202 nor 503. */
  stoppedBecause: string | undefined;
}

/** Answers other than 202 and 503 after which the submitter stops. */
const MAX_UNEXPECTED_ANSWERS = 20;

/** `/_slowlane/jobs/<id>` → `<id>`, else undefined. */
function idFromLocation(answer: ProxyAnswer): string | undefined {
  const location = answer.headers.location;
  if (typeof location !== "string" || !location.startsWith(`${JOBS}/`)) return undefined;
  return location.slice(JOBS.length + 1);
}

export function startSubmitter(options: SubmitOptions): Submitter {
  const { client, backend, random } = options;
  const report: SubmitReport = { accepted: [], notAccepted: [], givenUp: [], stoppedBecause: undefined };
  /** Keys accepted and not yet answered by the backend; pruned lazily. */
  const backlog = new Set<string>();
  let next = 0;
  let inFlight = 0;
  let unexpected = 0;

  const backlogSize = (): number => {
    for (const key of backlog) if (backend.hasAnswered(key)) backlog.delete(key);
    return backlog.size;
  };

  async function submitToken(token: string): Promise<void> {
    for (let tryNo = 1; ; tryNo++) {
      while (backlogSize() >= options.maxBacklog && Date.now() < options.deadline) await sleep(20);
      if (Date.now() >= options.deadline || report.stoppedBecause !== undefined) {
        report.givenUp.push(token);
        return;
      }
      const key = toSubmissionKey(token, tryNo);
      let answer: ProxyAnswer | undefined;
      let error: unknown;
      inFlight += 1;
      try {
        answer = await client.send("POST", `/work/${token}?try=${tryNo}`, JSON.stringify({ token, try: tryNo }));
      } catch (err) {
        error = err;
      } finally {
        inFlight -= 1;
      }
      const id = answer?.status === 202 ? idFromLocation(answer) : undefined;
      if (id !== undefined) {
        report.accepted.push({ token, tryNo, key, id });
        backlog.add(key);
        return;
      }
      const reason = answer?.status === 202 ? "202 without a Location" : describeFailure(answer, error);
      report.notAccepted.push({ key, reason });
      // A 503 or a dropped connection is the proxy telling the truth about a fault; anything else
      // (a 500, a 400) will not heal by retrying: stop rather than spin until the deadline.
      if (answer !== undefined && answer.status !== 503 && ++unexpected >= MAX_UNEXPECTED_ANSWERS) {
        report.stoppedBecause ??= `${unexpected} unexpected answers, the last: ${reason} ${answer.body.slice(0, 300)}`;
      }
      // A 503 says when to come back (whole seconds); no answer at all: the proxy is restarting.
      const retryAfterS = Number(answer?.headers["retry-after"]);
      await sleep(answer?.status === 503 && retryAfterS > 0 ? Math.min(retryAfterS * 1_000, 1_000) : 100 + random() * 200);
    }
  }

  async function lane(): Promise<void> {
    while (next < options.jobs) {
      const index = next++;
      await submitToken(`j${String(index).padStart(6, "0")}${Math.floor(random() * 1e9).toString(36)}`);
    }
  }

  const done = Promise.all(Array.from({ length: options.concurrency }, lane)).then(() => report);
  return {
    accepted: report.accepted,
    get inFlight() {
      return inFlight;
    },
    done,
  };
}
