/**
 * What the accept path reads from a request before queueing it: the body (in memory, or streamed
 * into the Object Store when too large for a message), the headers the backend will get, and the
 * `Idempotency-Key`.
 */
import type { IncomingMessage } from "node:http";
import { BadRequestError, BodyTooLargeError } from "../errors.js";
import type { StoredBodyRef } from "../jobs/envelope.js";
import { requestObjectName } from "../jobs/store.js";
import type { JobStore } from "../jobs/store.js";
import { withoutHopByHop } from "../shared/hop-by-hop.js";
import { splitBody } from "../shared/split-body.js";
import { inTurns } from "./small-chunks.js";

/** Content-Length is recomputed by the worker; the X-Forwarded-* ones are set by `toStoredHeaders`. */
const REPLACED = new Set(["content-length", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "x-forwarded-host"]);
/** An Idempotency-Key: 1 to 255 visible ASCII characters or spaces (UUIDs, ULIDs, hashes...). */
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

/** The request body: in memory when it fits in a message, else already in the Object Store. */
export type ReadBody = { inline: Uint8Array } | { stored: StoredBodyRef };

/**
 * Reads the body, refusing more than `maxBytes`. Up to `inlineBytes` it is kept in memory; past
 * that, what was read and the rest go to the Object Store under a fresh name as they arrive.
 */
export async function readBody(req: IncomingMessage, store: JobStore, id: string, inlineBytes: number, maxBytes: number): Promise<ReadBody> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > maxBytes) throw new BodyTooLargeError(maxBytes);
  const body = await splitBody(inTurns(req), inlineBytes, maxBytes, () => new BodyTooLargeError(maxBytes));
  if ("whole" in body) return { inline: body.whole };
  const name = requestObjectName(id);
  return { stored: { name, bytes: await store.putRequestBody(name, body.stream) } };
}

/** The request headers as the backend would see them through a proxy: X-Forwarded-* added. */
export function toStoredHeaders(req: IncomingMessage): string[] {
  const pairs = withoutHopByHop(req.rawHeaders, REPLACED);
  const priorFor = req.headers["x-forwarded-for"];
  const clientIp = req.socket.remoteAddress ?? "";
  const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
  const forwarded: [string, string][] = [
    ["x-forwarded-for", priorFor ? `${String(priorFor)}, ${clientIp}` : clientIp],
    ["x-forwarded-port", String(req.socket.localPort ?? "")],
    ["x-forwarded-proto", encrypted ? "https" : "http"],
    ["x-forwarded-host", req.headers.host ?? ""],
  ];
  for (const [name, value] of forwarded) if (value) pairs.push(name, value);
  return pairs;
}

/** The `Idempotency-Key` header, validated; `undefined` when absent. */
export function idempotencyKeyOf(req: IncomingMessage): string | undefined {
  const key = req.headers["idempotency-key"];
  if (key === undefined) return undefined;
  // Node joins repeated headers with ", ": count the raw ones, so two keys are not taken for one.
  const count = req.rawHeaders.filter((name, i) => i % 2 === 0 && name.toLowerCase() === "idempotency-key").length;
  if (count !== 1 || typeof key !== "string" || !IDEMPOTENCY_KEY.test(key)) {
    throw new BadRequestError("Idempotency-Key must be one value of 1 to 255 printable ASCII characters");
  }
  return key;
}

/** Whose request it is, for scoping idempotency keys: the credentials the caller sent, if any. */
export function callerOf(req: IncomingMessage): string {
  return req.headers.authorization ?? req.headers.cookie ?? "";
}

