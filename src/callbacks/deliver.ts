/**
 * One attempt at a callback: a signed POST, and what its outcome means for the next step. Retrying,
 * and keeping deliveries across restarts, belong to the caller; this file makes one call and says
 * whether to call again (`retry`), stop for good (`rejected`, `refused`) or stop happily (`delivered`).
 *
 * Reasons end up in logs and may be shown to the client that asked for the callback, so they name
 * the callback's own host and a status or error code, never an address it resolved to, and never
 * the receiver's body (with a literally allowed internal receiver that would let a client read it).
 */
import { Agent, request } from "undici";
import type { Dispatcher } from "undici";
import { parseRetryAfterMs } from "../shared/retry-policy.js";
import { signDelivery } from "./signature.js";
import { ADDRESS_REFUSED_CODE, toConnectLookup } from "./url-policy.js";
import type { CallbackPolicy } from "./url-policy.js";

export type DeliveryOutcome =
  /** The receiver answered 2xx. */
  | { kind: "delivered"; status: number }
  /** No answer (connection error, timeout) or 5xx, 408, 429: try again; `retryAfterMs` is the receiver's own `Retry-After`. */
  | { kind: "retry"; reason: string; status?: number; retryAfterMs?: number }
  /** Any other answer (4xx, or a 3xx, since redirects are not followed): do not try again. */
  | { kind: "rejected"; status: number; reason: string }
  /** Not sent: the URL is not http(s), or its host resolved to an address callbacks may not reach. */
  | { kind: "refused"; reason: string };

export interface DeliverCallbackOptions {
  /** An http(s) URL that `checkCallbackUrl` allowed. */
  readonly url: URL | string;
  /** `whsec_<base64>`, from `loadWebhookSecret`. */
  readonly secret: string;
  /** The `webhook-id`: the same on every attempt of one delivery. */
  readonly deliveryId: string;
  /** The JSON event, serialised once (see `toCallbackEvent`). */
  readonly body: string;
  /** The whole attempt, from resolving the host to the end of the answer's headers, in milliseconds. */
  readonly timeoutMs: number;
  /** From `createCallbackDispatcher`; without one, a safe dispatcher is made for this call and closed after it. */
  readonly dispatcher?: Dispatcher;
  /** Aborting it (shutdown) rejects with its reason instead of giving an outcome: the attempt did not happen. */
  readonly signal?: AbortSignal;
}

/** Bytes of the receiver's answer read (then dropped) so the connection can be reused; the rest is not read. */
const MAX_ANSWER_BYTES = 4_096;
const RETRY_STATUSES = new Set([408, 429]);

/**
 * An undici dispatcher for callbacks: connections go only to addresses `toConnectLookup(policy)`
 * allows, judged when each connection is made. Close it on shutdown.
 */
export function createCallbackDispatcher(policy?: CallbackPolicy, options: { connectTimeoutMs?: number } = {}): Agent {
  return new Agent({ connect: { lookup: toConnectLookup(policy), timeout: options.connectTimeoutMs ?? 10_000 } });
}

/** Makes one signed POST of `body` to `url` and classifies the outcome; never follows a redirect. */
export async function deliverCallback(options: DeliverCallbackOptions): Promise<DeliveryOutcome> {
  const url = new URL(options.url);
  if (url.protocol !== "http:" && url.protocol !== "https:") return { kind: "refused", reason: "the callback URL is not http or https" };
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const ownDispatcher = options.dispatcher ? undefined : createCallbackDispatcher();
  const headers = {
    "content-type": "application/json",
    "user-agent": "slowlane",
    ...signDelivery(options.secret, { id: options.deliveryId, timestampS: Math.floor(Date.now() / 1_000), body: options.body }),
  };
  try {
    const answer = await request(url, {
      method: "POST",
      headers,
      body: options.body,
      dispatcher: options.dispatcher ?? ownDispatcher,
      signal,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
    });
    const outcome = toOutcome(url, answer.statusCode, answer.headers["retry-after"]);
    await discardAnswer(answer.body);
    return outcome;
  } catch (err) {
    if (options.signal?.aborted) throw options.signal.reason;
    return toFailureOutcome(url, err, timeout.aborted ? options.timeoutMs : undefined);
  } finally {
    await ownDispatcher?.destroy();
  }
}

function toOutcome(url: URL, status: number, retryAfter: string | string[] | undefined): DeliveryOutcome {
  if (status >= 200 && status < 300) return { kind: "delivered", status };
  const reason = `${url.host} answered ${status}`;
  if (status >= 500 || RETRY_STATUSES.has(status)) {
    const retryAfterMs = parseRetryAfterMs(status, Array.isArray(retryAfter) ? retryAfter[0] : retryAfter);
    return retryAfterMs === undefined ? { kind: "retry", reason, status } : { kind: "retry", reason, status, retryAfterMs };
  }
  if (status >= 300 && status < 400) return { kind: "rejected", status, reason: `${reason} (redirects are not followed)` };
  return { kind: "rejected", status, reason };
}

/** Reads at most {@link MAX_ANSWER_BYTES} of the answer, then drops the rest with the connection. */
async function discardAnswer(body: Dispatcher.ResponseData["body"]): Promise<void> {
  let seenBytes = 0;
  try {
    for await (const chunk of body) {
      seenBytes += (chunk as Buffer).length;
      if (seenBytes > MAX_ANSWER_BYTES) break; // leaving the loop destroys the stream
    }
  } catch {
    // The status decided the outcome; a body cut short changes nothing.
  }
}

/**
 * Why no answer came. Error messages are not used: Node's name the address connected to
 * (`connect ECONNREFUSED 10.1.2.3:80`), which is ours to know, not the client's.
 */
function toFailureOutcome(url: URL, err: unknown, timedOutAfterMs: number | undefined): DeliveryOutcome {
  const code = findCode(err);
  if (code === ADDRESS_REFUSED_CODE) {
    return { kind: "refused", reason: `${url.hostname} resolves to a loopback, private or link-local address` };
  }
  if (timedOutAfterMs !== undefined || (code !== undefined && /TIMEOUT/.test(code))) {
    const within = timedOutAfterMs === undefined ? "in time" : `within ${timedOutAfterMs} ms`;
    return { kind: "retry", reason: `no answer from ${url.host} ${within}` };
  }
  if (code === "ECONNREFUSED") return { kind: "retry", reason: `connection refused by ${url.host}` };
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return { kind: "retry", reason: `${url.hostname} could not be resolved` };
  if (code === "ECONNRESET" || code === "UND_ERR_SOCKET") return { kind: "retry", reason: `${url.host} closed the connection before answering` };
  return { kind: "retry", reason: code === undefined ? `could not reach ${url.host}` : `could not reach ${url.host} (${code})` };
}

/** The first error code in `err`, its causes, or the errors it aggregates (Happy Eyeballs tries several addresses). */
function findCode(err: unknown, depth = 0): string | undefined {
  if (typeof err !== "object" || err === null || depth > 5) return undefined;
  const { code, cause, errors } = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof code === "string" && /^[A-Z0-9_]+$/.test(code)) return code;
  const inner = Array.isArray(errors) ? errors : [];
  for (const next of [cause, ...inner]) {
    const found = findCode(next, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}
