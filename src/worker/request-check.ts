/**
 * What a worker checks of a request it took from the queue before it builds the backend URL. The
 * proxy stores only requests it parsed, but the queue is not a trust boundary of its own: anything
 * that can publish to it (a bug, an old version, someone with NATS access) must not make a worker
 * call another host. A stored URL of `@evil.example/` appended to `http://backend:3000` is
 * `http://backend:3000@evil.example/`: the backend's address becomes a user name.
 */
import type { JsMsg } from "@nats-io/jetstream";
import { StoredRequestInvalidError } from "../errors.js";
import { decodeEnvelope } from "../jobs/envelope.js";
import type { JobRequest } from "../jobs/envelope.js";
import { isJobId } from "../jobs/job-id.js";
import type { JetStreamNames } from "../nats/names.js";

/** An HTTP method is a token (RFC 9110 §9.1, §5.6.2). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * An origin-form request target (RFC 9112 §3.2.1): a path starting with one `/` (`//x` would be
 * read as a host by some backends), then path and query characters, no spaces, controls or `#`.
 */
// eslint-disable-next-line no-control-regex -- control characters are exactly what it refuses
const ORIGIN_FORM = /^\/(?!\/)[^\s\x00-\x1f\x7f#]*$/;
/** Longest method slowlane sends (longer ones are certainly not a request a client made). */
const MAX_METHOD_LENGTH = 64;

/** Why a decoded request cannot be sent, or `undefined` when it can. */
export function checkStoredRequest(job: JobRequest): string | undefined {
  if (job.method.length > MAX_METHOD_LENGTH || !TOKEN.test(job.method)) return "its method is not an HTTP token";
  if (!ORIGIN_FORM.test(job.url)) return "its URL is not a path starting with a single /";
  return undefined;
}

/** The job a queued message is, and why it cannot be sent (`invalid`), if it cannot. */
export interface IdentifiedJob {
  readonly job: JobRequest;
  readonly invalid?: string;
}

/**
 * The job a message taken from `route`'s consumer is: named by its subject, described by its
 * envelope. `undefined` when the subject names no job (nothing to fail: the message is dropped).
 * A message whose envelope is missing, names another job or holds a request that cannot be sent
 * is still a job a client may be polling: it comes back `invalid`, to be failed, with what the
 * subject and the message say about it.
 */
export function identifyJob(names: JetStreamNames, route: string, msg: Pick<JsMsg, "subject" | "headers" | "time">): IdentifiedJob | undefined {
  const named = names.parseJobSubject(msg.subject);
  if (!named || named.route !== route || !isJobId(named.id)) return undefined;
  const decoded = decodeEnvelope(msg.headers);
  const bare: JobRequest = { id: named.id, route, method: "", url: "", headers: [], createdAt: msg.time.getTime() };
  if (!decoded) return { job: bare, invalid: "it has no readable slowlane request envelope" };
  if (decoded.id !== named.id || decoded.route !== route) return { job: bare, invalid: "its envelope names another job" };
  const invalid = checkStoredRequest(decoded);
  return invalid === undefined ? { job: decoded } : { job: decoded, invalid };
}

/**
 * The URL a job is sent to: the backend's base URL and the job's path. Throws when the result
 * would leave the backend's origin (a last guard behind {@link checkStoredRequest}).
 */
export function toBackendUrl(upstream: string, job: Pick<JobRequest, "url">): string {
  const url = upstream + job.url;
  let origin: string | undefined;
  try {
    origin = new URL(url).origin;
  } catch {
    origin = undefined;
  }
  if (origin !== new URL(upstream).origin) throw new StoredRequestInvalidError("its URL would leave the backend's origin");
  return url;
}
