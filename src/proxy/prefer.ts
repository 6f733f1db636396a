/**
 * RFC 7240 `Prefer` as slowlane reads it: `respond-async` (answer 202 at once) and `wait=N` (hold the
 * request up to N seconds for the job to finish), and what a route's `wait` and `async` make of them.
 * Other preferences (`return=…`, `handling=…`) are ignored, as the RFC allows.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { RouteConfig } from "../config/index.js";
import { MAX_WAIT_MS } from "../config/schema.js";

export interface Preferences {
  /** `Prefer: respond-async`. */
  readonly respondAsync: boolean;
  /** `Prefer: wait=N`, in ms, capped at {@link MAX_WAIT_MS}; `undefined` when absent or not a number of seconds. */
  readonly waitMs: number | undefined;
}

const NONE: Preferences = { respondAsync: false, waitMs: undefined };
const DELTA_SECONDS = /^\d{1,10}$/;

/**
 * Reads the `Prefer` header (Node joins repeated ones with ", "). Names are case-insensitive, values
 * may be quoted, parameters after `;` are ignored; the first of a repeated preference wins (RFC 7240 §2).
 */
export function parsePrefer(headers: IncomingHttpHeaders): Preferences {
  const raw = headers.prefer;
  if (raw === undefined || raw === "") return NONE;
  let respondAsync = false;
  let waitMs: number | undefined;
  let seenWait = false;
  for (const item of (Array.isArray(raw) ? raw.join(",") : raw).split(",")) {
    const [pref = ""] = item.split(";");
    const eq = pref.indexOf("=");
    const name = (eq === -1 ? pref : pref.slice(0, eq)).trim().toLowerCase();
    const value = eq === -1 ? "" : pref.slice(eq + 1).trim().replace(/^"(.*)"$/, "$1");
    if (name === "respond-async") respondAsync = true;
    else if (name === "wait" && !seenWait) {
      seenWait = true;
      if (DELTA_SECONDS.test(value)) waitMs = Math.min(Number(value) * 1_000, MAX_WAIT_MS);
    }
  }
  return { respondAsync, waitMs };
}

/** Whether a request that matched `route` becomes a job: always, or on an `async: prefer` route only when asked. */
export function isAsyncRequest(route: RouteConfig, headers: IncomingHttpHeaders): boolean {
  return route.async === "always" || parsePrefer(headers).respondAsync;
}

/** How long an accept holds its request for the job, and the `Preference-Applied` of each possible answer. */
export interface AcceptWait {
  /** 0: answer 202 at once. */
  readonly waitMs: number;
  /** `Preference-Applied` on a 202 (`respond-async`), when the request asked for it. */
  readonly acceptedApplied: string | undefined;
  /** `Preference-Applied` on a synchronous answer (`wait=N`), when the request's own wait was used. */
  readonly replayApplied: string | undefined;
}

/**
 * The wait of one accept: the client's `wait=N` when given (lower or higher than the route's, capped
 * at 60 s), else none with `respond-async`, else the route's `wait`.
 */
export function toAcceptWait(route: RouteConfig, prefs: Preferences): AcceptWait {
  const acceptedApplied = prefs.respondAsync ? "respond-async" : undefined;
  if (prefs.waitMs !== undefined) {
    return { waitMs: prefs.waitMs, acceptedApplied, replayApplied: `wait=${prefs.waitMs / 1_000}` };
  }
  return { waitMs: prefs.respondAsync ? 0 : Math.min(route.waitMs, MAX_WAIT_MS), acceptedApplied, replayApplied: undefined };
}
