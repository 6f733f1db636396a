/**
 * What the accept path reads from a request before queueing it: the body (in memory, or streamed
 * into the Object Store when too large for a message), the headers the backend will get, the
 * `Idempotency-Key` and the caller's identity that scopes it.
 */
import type { IncomingMessage } from "node:http";
import type { RouteConfig } from "../config/index.js";
import { BadRequestError, BodyTooLargeError } from "../errors.js";
import type { StoredBodyRef } from "../jobs/envelope.js";
import type { JobStore } from "../jobs/store.js";
import type { FingerprintHasher } from "../security/keyed-hash.js";
import { identityOf } from "../security/owner-identity.js";
import { withoutHopByHop } from "../shared/hop-by-hop.js";
import { splitBody } from "../shared/split-body.js";
import { inTurns } from "./small-chunks.js";

/** Content-Length is recomputed by the worker; the X-Forwarded-* ones are set by `toStoredHeaders`. */
const REPLACED = new Set(["content-length", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "x-forwarded-host"]);
/** An Idempotency-Key: 1 to 255 visible ASCII characters or spaces (UUIDs, ULIDs, hashes...). */
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

/** The request body: in memory when it fits in a message, else already in the Object Store. */
export type ReadBody = { inline: Uint8Array } | { stored: StoredBodyRef };

function refuseDeclaredTooLarge(req: IncomingMessage, maxBytes: number): void {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > maxBytes) throw new BodyTooLargeError(maxBytes);
}

/** Feeds every chunk that passes to `hasher` (the fingerprint of an idempotent request, taken as it streams). */
function hashing(stream: ReadableStream<Uint8Array>, hasher: FingerprintHasher): ReadableStream<Uint8Array> {
  return stream.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        hasher.update(chunk);
        controller.enqueue(chunk);
      },
    }),
  );
}

/**
 * Reads the body, refusing more than `maxBytes`. Up to `inlineBytes` it is kept in memory; past
 * that, what was read and the rest go to the Object Store under a fresh name as they arrive. With
 * `hasher`, every byte is fed to it on the way.
 */
export async function readBody(
  req: IncomingMessage,
  store: JobStore,
  id: string,
  limits: { inlineBytes: number; maxBytes: number },
  hasher?: FingerprintHasher,
): Promise<ReadBody> {
  refuseDeclaredTooLarge(req, limits.maxBytes);
  const body = await splitBody(inTurns(req), limits.inlineBytes, limits.maxBytes, () => new BodyTooLargeError(limits.maxBytes));
  if ("whole" in body) {
    hasher?.update(body.whole);
    return { inline: body.whole };
  }
  return { stored: await store.putRequestBody(id, hasher ? hashing(body.stream, hasher) : body.stream) };
}

/** Reads the body only to fingerprint it (a repeat of an idempotent request: nothing is stored). */
export async function hashBody(req: IncomingMessage, hasher: FingerprintHasher, maxBytes: number): Promise<string> {
  refuseDeclaredTooLarge(req, maxBytes);
  let bytes = 0;
  for await (const chunk of inTurns(req)) {
    bytes += chunk.byteLength;
    if (bytes > maxBytes) throw new BodyTooLargeError(maxBytes);
    hasher.update(chunk);
  }
  return hasher.digest();
}

/** `prior,value` as http-proxy-3 appends on passthrough; `value` alone when there was none. */
function appended(prior: string | string[] | undefined, value: string): string {
  const before = Array.isArray(prior) ? prior.join(",") : prior;
  return before ? `${before},${value}` : value;
}

/**
 * The request headers as the backend would see them through passthrough (http-proxy-3's `xfwd`):
 * X-Forwarded-For, -Port and -Proto get this hop appended to what the client sent; X-Forwarded-Host
 * is kept when sent, else set from Host.
 */
export function toStoredHeaders(req: IncomingMessage): string[] {
  const pairs = withoutHopByHop(req.rawHeaders, REPLACED);
  const encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
  const host = req.headers.host ?? "";
  const port = /:(\d+)$/.exec(host)?.[1] ?? (encrypted ? "443" : "80");
  const forwarded: [string, string][] = [
    ["x-forwarded-for", appended(req.headers["x-forwarded-for"], req.socket.remoteAddress ?? "")],
    ["x-forwarded-port", appended(req.headers["x-forwarded-port"], port)],
    ["x-forwarded-proto", appended(req.headers["x-forwarded-proto"], encrypted ? "https" : "http")],
    ["x-forwarded-host", String(req.headers["x-forwarded-host"] ?? "") || host],
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

/**
 * Whose key an `Idempotency-Key` is: the caller's identity under the route's `owner` list, so the
 * same key from another caller names another job. A route with `owner: []` (no binding) still
 * scopes keys by the credentials sent (Authorization, else Cookie), as before owner binding.
 */
export function idempotencyScopeOf(req: IncomingMessage, route: Pick<RouteConfig, "owner">): string[] {
  if (route.owner.length > 0) return ["owner", ...(identityOf(route.owner, req.rawHeaders) ?? [])];
  return ["caller", req.headers.authorization ?? req.headers.cookie ?? ""];
}
