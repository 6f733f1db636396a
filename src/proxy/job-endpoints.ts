/**
 * The jobs endpoints: `GET <jobs.path>/<id>` (status), `GET <jobs.path>/<id>/result` (the
 * backend's response replayed) and `DELETE <jobs.path>/<id>` (cancel, or delete a finished job's
 * response). Ids are checked against the exact shape slowlane issues before they reach a subject
 * or a KV key, and a tagged id's tag against the server keys: anything else is a 404 from memory.
 * A job bound to its caller answers only requests that show the same identity (else the same 404).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Subscription } from "@nats-io/transport-node";
import { routeTableOf } from "../config/index.js";
import type { Config } from "../config/index.js";
import { JobNotFoundError, MethodNotAllowedError, NatsUnavailableError, SlowlaneError } from "../errors.js";
import type { Logger } from "../log.js";
import { cancelJob, subscribeCancelNotices } from "../jobs/cancel.js";
import { isJobId, isJobIdShape } from "../jobs/job-id.js";
import { isFinal } from "../jobs/record.js";
import type { JobStore } from "../jobs/store.js";
import type { ServerKeys } from "../security/server-keys.js";
import { sendProblem } from "../shared/problem.js";
import type { CompletionEstimator } from "./estimate.js";
import { sendResult } from "./job-result.js";
import { createJobLookup, createStatusAnswer } from "./job-status.js";
import type { UnknownIds } from "./job-status.js";
import type { JobWatch } from "./job-watch.js";
import type { ResultCache } from "./result-cache.js";
import { createStatusCompletion } from "./status-completion.js";

export interface JobsDeps {
  /** The config in force (it changes on reload; `jobs.path` does not). */
  config: () => Config;
  log: Logger;
  cache: ResultCache;
  /** The store while NATS is connected and set up, else `undefined` (→ 503). */
  store: () => JobStore | undefined;
  /** The server keys (id tags, owner tags); `undefined` until known, and then the store is too (→ 503). */
  keys: () => ServerKeys | undefined;
  /** Ids recently found nowhere, shared with the accept path (which forgets the ids it creates). */
  unknownIds: UnknownIds;
  /** The proxy's one watch on job transitions (long-poll, SSE, WebSocket). */
  watch: JobWatch;
  estimator: CompletionEstimator;
}

export interface JobsHandler {
  (req: IncomingMessage, res: ServerResponse, pathname: string): Promise<void>;
  /** A WebSocket upgrade under the jobs path: the status URL's WebSocket, or a refusal. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Ends streams and sockets and answers waiting requests (shutdown). */
  close(): void;
}

const READ_METHODS = ["GET", "HEAD"];
const JOB_METHODS = ["GET", "HEAD", "DELETE"];

/** `<id>` or `<id>/result` after the jobs path; `undefined` for anything else. */
function parseJobPath(pathname: string, prefix: string): { id: string; result: boolean } | undefined {
  const rest = pathname.startsWith(prefix) ? pathname.slice(prefix.length) : "";
  const slash = rest.indexOf("/");
  const id = slash === -1 ? rest : rest.slice(0, slash);
  const tail = slash === -1 ? "" : rest.slice(slash);
  if (!isJobIdShape(id) || (tail !== "" && tail !== "/result")) return undefined;
  return { id, result: tail === "/result" };
}

export function createJobsHandler(deps: JobsDeps): JobsHandler {
  const { log, cache } = deps;
  const jobsPath = deps.config().jobs.path;
  const prefix = `${jobsPath}/`;
  const lookup = createJobLookup(deps);
  const sendStatus = createStatusAnswer(jobsPath, deps.config);
  const completion = createStatusCompletion({ ...deps, jobsPath, sendFinalRecord: sendStatus });

  // Notices from any replica: a canceled or deleted job leaves this proxy's cache of finished jobs,
  // a job that exists again (an idempotent request) its cache of unknown ids.
  let listening: { store: JobStore; subs: Subscription[] } | undefined;
  function listenForCancels(store: JobStore | undefined): void {
    if (!store || listening?.store.context.nc === store.context.nc) return;
    for (const sub of listening?.subs ?? []) sub.unsubscribe();
    const { context } = store;
    const accepted = context.nc.subscribe(context.names.acceptedFilter, {
      callback: (err, msg) => {
        const id = err ? undefined : context.names.idOfAcceptedSubject(msg.subject);
        if (id !== undefined) deps.unknownIds.forget(id);
      },
    });
    const canceled = subscribeCancelNotices(context, (id) => {
      cache.delete(id);
      deps.unknownIds.forget(id);
    });
    listening = { store, subs: [canceled, accepted] };
  }

  async function cancel(id: string, rawHeaders: readonly string[]): Promise<void> {
    await lookup.checkOwner(id, rawHeaders);
    const store = deps.store();
    if (!store) throw new NatsUnavailableError("the job store is unavailable, retry later");
    const table = routeTableOf(deps.config());
    try {
      const { route, was } = await cancelJob(store, id, {
        routes: lookup.knownRoutes(store),
        ttlMsOf: (name) => table.settingsOf(name).ttlMs,
      });
      cache.delete(id);
      log.info({ job: id, route, was }, was === "finished" ? "finished job deleted" : "job canceled");
    } catch (err) {
      if (err instanceof SlowlaneError) throw err;
      throw new NatsUnavailableError("the job store did not answer, retry later", { cause: err });
    }
  }

  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const target = parseJobPath(q === -1 ? url : url.slice(0, q), prefix);
    if (!target || target.result) return completion.sockets.refuse(socket, new JobNotFoundError());
    if (req.method !== "GET") return completion.sockets.refuse(socket, new MethodNotAllowedError(["GET"]));
    void completion.sockets.upgrade(req, socket, head, target.id, () => lookup.find(target.id, req.rawHeaders));
  }

  async function jobs(req: IncomingMessage, res: ServerResponse, pathname: string): Promise<void> {
    try {
      const target = parseJobPath(pathname, prefix);
      if (!target) throw new JobNotFoundError();
      // A tagged id that no configured key made is unknown without a lookup. (No keys yet: NATS is away, and the store with it: 503 below.)
      const keys = deps.keys();
      if (keys && !isJobId(keys, target.id)) throw new JobNotFoundError();
      const allowed = target.result ? READ_METHODS : JOB_METHODS;
      if (!allowed.includes(req.method ?? "")) throw new MethodNotAllowedError(allowed);
      listenForCancels(deps.store());
      // Completion events teach the estimate even when nobody waits here.
      deps.watch.ensure();
      if (req.method === "DELETE") {
        await cancel(target.id, req.rawHeaders);
        res.writeHead(204).end();
        return;
      }
      // Long-poll and SSE read the job themselves, once they are sure to hear of its next transition.
      const follow = !target.result && req.method === "GET" ? completion.followOf(req) : undefined;
      if (follow) return await completion.serve(follow, req, res, target.id, () => lookup.find(target.id, req.rawHeaders));
      const { record, body } = await lookup.find(target.id, req.rawHeaders);
      if (target.result && isFinal(record)) await sendResult(deps, res, record, body);
      else if (isFinal(record)) sendStatus(res, record);
      else completion.live.sendPending(res, record);
    } catch (err) {
      const headers = err instanceof NatsUnavailableError ? { "retry-after": deps.config().defaults.retryAfterS } : undefined;
      sendProblem(res, err, { log, ...(headers ? { headers } : {}) });
    }
  }

  return Object.assign(jobs, { upgrade, close: () => completion.close() });
}
