/**
 * The request target as slowlane routes it and forwards it. Routes match a path, and the backend
 * will read that path after its own normalisation: if the two readings differ, a request can reach
 * an async route's handler synchronously (`POST /./reports/q3` misses `/reports/**` but is
 * `/reports/q3` to the backend). So the path is normalised once, before routing, and the normalised
 * path is the one forwarded, on passthrough and on the async path alike. What cannot be normalised
 * without guessing how the backend reads it is refused (400):
 *
 * - percent-encoded unreserved characters (RFC 3986 §2.3: letters, digits, `-._~`) are decoded, so
 *   `%2e` and `%2E` are dots and `%72eports` is `reports`; other escapes are kept, hex upper-cased
 *   (RFC 3986 §6.2.2.1), as Envoy's `normalize_path` does;
 * - dot segments are removed (RFC 3986 §5.2.4); one that would climb above the root is refused;
 * - `%2F`, `%5C` and `\` are refused: many backends decode them into path separators, which
 *   slowlane cannot route without knowing which (Envoy's `path_with_escaped_slashes_action`);
 * - a malformed escape (`%zz`) and a fragment (`#`, never part of a request target) are refused;
 * - `//` is kept, not merged: some backends merge slashes (nginx, Spring), others do not (Express),
 *   and merging would change the path those others see. Instead {@link pathVariants} lists the
 *   spellings a backend may take for the same path (slashes merged, trailing slash removed) and the
 *   server refuses a request whose variants would be routed differently. Empty segments next to dot
 *   segments are refused outright: merging before or after removing dots gives different paths.
 *
 * Routes are case-sensitive, and so is this normalisation: `/Reports/q3` is not `/reports/q3`. A
 * backend that ignores case needs its async routes listed for every spelling it accepts.
 */
import { BadRequestError } from "../errors.js";

/** `http://host/path?q` → `/path?q`, textually. */
const ABSOLUTE_FORM = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*(.*)$/s;

/** Bytes of the characters RFC 3986 §2.3 calls unreserved: decoded wherever they are escaped. */
const UNRESERVED = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~") UNRESERVED[c.charCodeAt(0)] = 1;

const SLASH = 0x2f;
const BACKSLASH = 0x5c;
const PERCENT = 0x25;
const DOT = 0x2e;
const NO_VARIANTS: readonly string[] = [];

/**
 * The request target in origin-form, its path normalised (see the module comment): what slowlane
 * routes and forwards. {@link toOriginForm}, then {@link normalizeTarget}.
 * @throws BadRequestError when the target cannot be routed safely.
 */
export function parseRequestTarget(url: string): string {
  return normalizeTarget(toOriginForm(url));
}

/**
 * The request target as a path (origin-form), textually. The absolute-form (RFC 9112 §3.2.2) is
 * reduced to its path, so that routing and the backend see the same request.
 * @throws BadRequestError for `*` and anything else that is not a path.
 */
export function toOriginForm(url: string): string {
  if (url.startsWith("/")) return url;
  const rest = ABSOLUTE_FORM.exec(url)?.[1];
  if (rest === undefined) throw new BadRequestError("the request target must be a path");
  return rest.startsWith("/") ? rest : `/${rest}`;
}

/**
 * An origin-form target with its path normalised by {@link normalizePath}; the query is kept byte
 * for byte. Returns `target` itself when it is already normal.
 * @throws BadRequestError when the target cannot be routed safely, or has a fragment.
 */
export function normalizeTarget(target: string): string {
  if (target.includes("#")) throw new BadRequestError("the request target must not contain a fragment (#)");
  const q = target.indexOf("?");
  const path = q === -1 ? target : target.slice(0, q);
  const normalized = normalizePath(path);
  return normalized === path ? target : normalized + target.slice(path.length);
}

/**
 * A path (starting with `/`, no query) normalised: unreserved escapes decoded, other escapes
 * upper-cased, dot segments removed. Returns `path` itself when there is nothing to do, which is
 * the common case and costs one scan.
 * @throws BadRequestError for `%2F`, `%5C`, `\`, malformed escapes, dot segments above the root,
 * and empty segments mixed with dot segments.
 */
export function normalizePath(path: string): string {
  if (isPlain(path)) return path;
  const decoded = decodeEscapes(path);
  const segments = decoded.split("/");
  let dots = false;
  let empty = false;
  // segments[0] is the "" before the leading slash; an empty last segment is a trailing slash.
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i] as string;
    if (segment === "." || segment === "..") dots = true;
    else if (segment === "" && i < segments.length - 1) empty = true;
  }
  if (!dots) return decoded;
  if (empty) throw new BadRequestError("the path mixes empty segments (//) with dot segments; send it normalised");
  return removeDotSegments(segments);
}

/** No escape, no backslash, no segment starting with a dot: already normal. */
function isPlain(path: string): boolean {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === PERCENT || c === BACKSLASH || (c === DOT && path.charCodeAt(i - 1) === SLASH)) return false;
  }
  return true;
}

function decodeEscapes(path: string): string {
  let out = "";
  let from = 0;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === BACKSLASH) throw new BadRequestError("the path must not contain a backslash");
    if (c !== PERCENT) continue;
    const hex = path.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new BadRequestError("the path has a malformed percent-escape");
    const byte = parseInt(hex, 16);
    if (byte === SLASH || byte === BACKSLASH) {
      throw new BadRequestError("the path must not contain an encoded slash or backslash (%2F, %5C)");
    }
    out += path.slice(from, i) + (byte < 128 && UNRESERVED[byte] === 1 ? String.fromCharCode(byte) : `%${hex.toUpperCase()}`);
    from = i + 3;
    i += 2;
  }
  return out + path.slice(from);
}

/** RFC 3986 §5.2.4 over the segments of an absolute path, refusing to climb above the root. */
function removeDotSegments(segments: readonly string[]): string {
  const out: string[] = [];
  const last = segments.length - 1;
  for (let i = 1; i <= last; i++) {
    const segment = segments[i] as string;
    if (segment === "..") {
      if (out.length === 0) throw new BadRequestError("the path climbs above the root (..)");
      out.pop();
    } else if (segment !== ".") {
      out.push(segment);
      continue;
    }
    // A dot segment at the end leaves a directory: `/a/b/..` is `/a/`.
    if (i === last) out.push("");
  }
  return `/${out.join("/")}`;
}

/**
 * Other spellings a backend may read as the same path as `path` (normalised): with runs of slashes
 * merged, and without a trailing slash. Empty for ordinary paths (the common case allocates nothing).
 * A request is routed safely only when each of these would be routed as `path` is.
 */
export function pathVariants(path: string): readonly string[] {
  const trailing = path.length > 1 && path.charCodeAt(path.length - 1) === SLASH;
  const doubled = path.includes("//");
  if (!trailing && !doubled) return NO_VARIANTS;
  const variants = new Set<string>();
  const merged = doubled ? path.replace(/\/{2,}/g, "/") : path;
  if (doubled) variants.add(merged);
  if (trailing) variants.add(path.slice(0, -1));
  if (doubled && merged.length > 1 && merged.endsWith("/")) variants.add(merged.slice(0, -1));
  return [...variants];
}
