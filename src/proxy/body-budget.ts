/**
 * The in-flight request-body budget (`server.maxInflightBodySize`): how many body bytes all accepts
 * together may hold in memory while they wait for JetStream. Each accept reserves, before it reads a
 * byte, the most it can hold (its declared Content-Length, at most one message; a body without one,
 * a whole message) and gives it back once answered. A request that does not fit is answered 503
 * with `Retry-After` at once, its body unread: no number of clients, slow or many, takes the proxy
 * past the budget.
 */
import type { IncomingMessage } from "node:http";
import { OverloadedError } from "../errors.js";
import type { Logger } from "../log.js";
import { sendProblem } from "../shared/problem.js";
import type { AcceptHandler } from "./accept.js";
import { holdReads } from "./small-chunks.js";

/** Bytes held across requests, under a ceiling read at each reservation (a reload may change it). */
export interface ByteBudget {
  /**
   * Reserves `bytes` if they fit, and says whether they did. A reservation larger than the whole
   * budget fits when nothing else is held, so one large request still passes on its own.
   */
  tryReserve(bytes: number): boolean;
  release(bytes: number): void;
  /** Bytes reserved now. */
  readonly heldBytes: number;
}

export function createByteBudget(maxBytes: () => number): ByteBudget {
  let held = 0;
  return {
    tryReserve(bytes) {
      if (held > 0 && held + bytes > maxBytes()) return false;
      held += bytes;
      return true;
    },
    release(bytes) {
      held -= bytes;
    },
    get heldBytes() {
      return held;
    },
  };
}

/**
 * The most of this request's body an accept holds in memory: the declared length, capped at
 * `maxHeldBytes` (a larger body streams to the Object Store past that); `maxHeldBytes` for a
 * chunked body, whose length is not known; none when the request has no body.
 */
export function toReservedBytes(req: IncomingMessage, maxHeldBytes: number): number {
  if (req.headers["transfer-encoding"] !== undefined) return maxHeldBytes;
  const declared = Number(req.headers["content-length"] ?? 0);
  return Number.isFinite(declared) && declared > 0 ? Math.min(declared, maxHeldBytes) : 0;
}

export interface BodyBudgetOptions {
  budget: ByteBudget;
  /** The most one accept holds of a body: the largest message (a larger body streams past it). */
  maxHeldBytes: () => number;
  log: Logger;
}

/** Refusals are logged at most this often, with how many there were. */
const LOG_INTERVAL_MS = 10_000;

/** `accept` behind the budget: a request that does not fit gets 503 before its body is read. */
export function withBodyBudget(accept: AcceptHandler, options: BodyBudgetOptions): AcceptHandler {
  const { budget, log } = options;
  let refused = 0;
  let loggedAt = 0;
  return async (req, res, route) => {
    const reserved = toReservedBytes(req, options.maxHeldBytes());
    if (!budget.tryReserve(reserved)) {
      refused += 1;
      if (Date.now() - loggedAt >= LOG_INTERVAL_MS) {
        log.warn({ refused, heldBytes: budget.heldBytes, route: route.name }, "request body budget full; answered 503");
        loggedAt = Date.now();
        refused = 0;
      }
      // The body is not read, nor parsed: the connection closes once the answer is out.
      holdReads(req);
      sendProblem(res, new OverloadedError(), { headers: { "retry-after": route.retryAfterS, connection: "close" } });
      return;
    }
    try {
      await accept(req, res, route);
    } finally {
      budget.release(reserved);
    }
  };
}
