/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message: they are dropped
 * when a request is stored for later and when a stored response is replayed.
 */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  // Not hop-by-hop in RFC 9110, but met here: Node's server already sent the client its
  // `100 Continue`, a stored request is replayed whole, and undici refuses to send it (every
  // async job submitted with it, as curl does for bodies over 1 KiB, would fail).
  "expect",
]);

/** Names listed in the Connection header(s), lower-case. */
function connectionTokens(pairs: readonly string[]): Set<string> {
  const tokens = new Set<string>();
  for (let i = 0; i < pairs.length; i += 2) {
    if ((pairs[i] as string).toLowerCase() !== "connection") continue;
    for (const token of (pairs[i + 1] as string).split(",")) {
      const name = token.trim().toLowerCase();
      if (name) tokens.add(name);
    }
  }
  return tokens;
}

/**
 * Deletes from a parsed header object (`req.headers`) the hop-by-hop headers and those named in
 * `Connection`, except the ones in `keep`. Looks names up instead of walking every header: this
 * runs on every passthrough request.
 */
export function dropHopByHop(headers: Record<string, unknown>, keep: ReadonlySet<string>): void {
  const connection = headers.connection;
  if (typeof connection === "string") {
    for (const token of connection.split(",")) {
      const name = token.trim().toLowerCase();
      if (name !== "" && !keep.has(name)) delete headers[name];
    }
  }
  for (const name of HOP_BY_HOP) if (headers[name] !== undefined && !keep.has(name)) delete headers[name];
}

/**
 * Filters flat `[name, value, …]` pairs (Node's `rawHeaders` shape): drops hop-by-hop headers,
 * those named in `Connection`, and any in `alsoDrop` (lower-case).
 */
export function withoutHopByHop(pairs: readonly string[], alsoDrop: ReadonlySet<string> = new Set()): string[] {
  const named = connectionTokens(pairs);
  const kept: string[] = [];
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named.has(lower) || alsoDrop.has(lower)) continue;
    kept.push(name, pairs[i + 1] as string);
  }
  return kept;
}

/** Node/undici header objects (`string | string[]` values) as flat pairs, repeated headers kept. */
export function toHeaderPairs(headers: Record<string, string | string[] | undefined>): string[] {
  const pairs: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) pairs.push(name, v);
    else pairs.push(name, value);
  }
  return pairs;
}
