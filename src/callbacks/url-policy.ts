/**
 * Which callback URLs a route accepts (its `callbacks.allow` patterns) and which addresses a callback
 * may reach. A URL must match a pattern, and its host must not be, or resolve to, a non-public address
 * (see `isPrivateAddress`) unless the pattern it matched names that address literally: an operator who
 * lists `http://10.0.0.5:8080/hooks` means 10.0.0.5, while `https://*.example.com/**` never means the
 * metadata service, whatever a DNS record says.
 *
 * The check at accept is not enough on its own: a name can resolve to a public address then and a
 * private one at delivery (DNS rebinding). `toConnectLookup` closes that gap by judging the addresses
 * the connection is actually made to.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import type { LookupAddress, LookupOptions } from "node:dns";
import { isIP } from "node:net";
import type { LookupFunction } from "node:net";
import { isPrivateAddress } from "./private-address.js";
import { compileCallbackPattern, matchesCallbackPattern } from "../config/url-pattern.js";
import type { CallbackPattern } from "../config/url-pattern.js";

export { isPrivateAddress } from "./private-address.js";

/** Resolves a host name to every address it has (`dns.lookup` with `all: true`). */
export type LookupAll = (hostname: string) => Promise<readonly LookupAddress[]>;

export interface CallbackPolicyOptions {
  /** The resolver, for tests; the system's (`dns.lookup`, so /etc/hosts counts) by default. */
  readonly lookupAll?: LookupAll;
  /** How long resolving a callback host may take at accept, in milliseconds (5 s by default). */
  readonly lookupTimeoutMs?: number;
}

/** A route's compiled `callbacks.allow` list. Frozen; compile a new one on reload. */
export interface CallbackPolicy {
  readonly patterns: readonly CallbackPattern[];
  readonly lookupAll: LookupAll;
  readonly lookupTimeoutMs: number;
}

/** Every invalid pattern of an `allow` list, each with its index, so config validation can give each a path. */
export class CallbackPatternError extends Error {
  readonly problems: readonly { readonly index: number; readonly message: string }[];

  constructor(problems: readonly { readonly index: number; readonly message: string }[]) {
    super(problems.map((p) => `allow[${p.index}]: ${p.message}`).join("; "));
    this.name = "CallbackPatternError";
    this.problems = problems;
  }
}

export type CallbackUrlCheck = { ok: true; url: URL } | { ok: false; reason: string };

/** Longest callback URL accepted; it is stored with the job and logged. */
const MAX_URL_LENGTH = 2_048;
const DEFAULT_LOOKUP_TIMEOUT_MS = 5_000;
/** What a host name may be once the URL parser has lowercased and punycoded it. */
const DNS_NAME = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?$/;

const systemLookupAll: LookupAll = (hostname) => dnsLookup(hostname, { all: true });

/**
 * Compiles a route's `callbacks.allow` list. Throws a `CallbackPatternError` naming every invalid
 * pattern (and an empty list, which would refuse every callback).
 */
export function compileCallbackPolicy(allow: readonly string[], options: CallbackPolicyOptions = {}): CallbackPolicy {
  if (allow.length === 0) {
    throw new CallbackPatternError([{ index: 0, message: 'list at least one URL pattern, e.g. "https://hooks.example.com/**"' }]);
  }
  const problems: { index: number; message: string }[] = [];
  const patterns: CallbackPattern[] = [];
  allow.forEach((source, index) => {
    try {
      patterns.push(Object.freeze(compileCallbackPattern(source)));
    } catch (err) {
      problems.push({ index, message: `"${source}": ${(err as Error).message}` });
    }
  });
  if (problems.length > 0) throw new CallbackPatternError(problems);
  return Object.freeze({
    patterns: Object.freeze(patterns),
    lookupAll: options.lookupAll ?? systemLookupAll,
    lookupTimeoutMs: options.lookupTimeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS,
  });
}

/**
 * Whether a client's `X-Callback-Url` may be used. `ok` gives the parsed URL (fragment removed) to
 * store with the job; otherwise `reason` says why, safe to show the client: it names nothing but the
 * URL's own host, never an address the host resolved to.
 */
export async function checkCallbackUrl(policy: CallbackPolicy, url: string): Promise<CallbackUrlCheck> {
  const parsed = parseCandidate(url);
  if (typeof parsed === "string") return { ok: false, reason: parsed };
  const matching = policy.patterns.filter((p) => matchesCallbackPattern(p, parsed));
  if (matching.length === 0) return { ok: false, reason: "the callback URL matches none of this route's allowed patterns" };
  const host = parsed.hostname;
  if (isIP(host.replace(/^\[(.*)\]$/, "$1")) !== 0) {
    // A literal address cannot change later; only a pattern naming this very address lets a private one through.
    if (isPrivateAddress(host) && !matching.some((p) => p.address === host)) {
      return { ok: false, reason: `${host} is a loopback, private or link-local address; an allowed pattern must name it literally` };
    }
    return { ok: true, url: parsed };
  }
  const resolved = await resolveWithin(policy, host);
  if (typeof resolved === "string") return { ok: false, reason: resolved };
  if (resolved.some((a) => isPrivateAddress(a.address))) {
    return { ok: false, reason: `${host} resolves to a loopback, private or link-local address` };
  }
  return { ok: true, url: parsed };
}

/** The URL, or why it cannot be a callback URL at all (before any pattern is consulted). */
function parseCandidate(url: string): URL | string {
  if (url.length > MAX_URL_LENGTH) return `the callback URL is longer than ${MAX_URL_LENGTH} characters`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "the callback URL is not a valid absolute URL";
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return "the callback URL must use http or https";
  if (parsed.username !== "" || parsed.password !== "") return "the callback URL must not contain credentials (user@host)";
  if (!parsed.hostname.startsWith("[") && !DNS_NAME.test(parsed.hostname)) return "the callback URL's host is not a DNS name or IP address";
  parsed.hash = ""; // never sent over HTTP; dropped so the stored URL is what is called
  return parsed;
}

async function resolveWithin(policy: CallbackPolicy, host: string): Promise<readonly LookupAddress[] | string> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`${host} could not be resolved in time`), policy.lookupTimeoutMs);
  });
  try {
    const addresses = await Promise.race([policy.lookupAll(host), late]);
    return typeof addresses === "string" || addresses.length > 0 ? addresses : `${host} could not be resolved`;
  } catch {
    return `${host} could not be resolved`;
  } finally {
    clearTimeout(timer);
  }
}

/** The `code` of the error a connection gets when its host resolves to an address it may not reach. */
export const ADDRESS_REFUSED_CODE = "ERR_SLOWLANE_CALLBACK_ADDRESS_REFUSED";

/**
 * A `lookup` for `net.connect` (undici: `new Agent({ connect: { lookup } })`) that resolves a callback
 * host again at connection time and fails the connection, with `code` {@link ADDRESS_REFUSED_CODE},
 * if any address is non-public. Node does not call `lookup` for a literal IP host, which was judged
 * for good at accept; a literal host passed here anyway is allowed when public or named by a pattern.
 */
export function toConnectLookup(policy?: CallbackPolicy): LookupFunction {
  const lookupAll = policy?.lookupAll ?? systemLookupAll;
  const literal = new Set(policy?.patterns.flatMap((p) => (p.address === undefined ? [] : [p.address.replace(/^\[(.*)\]$/, "$1")])));
  return (hostname, options, callback) => {
    resolveForConnect(lookupAll, literal, hostname, options).then(
      (addresses) => process.nextTick(() => deliverLookup(addresses, options, callback)),
      (err: NodeJS.ErrnoException) => process.nextTick(() => callback(err, options.all ? [] : "")),
    );
  };
}

async function resolveForConnect(
  lookupAll: LookupAll,
  literal: ReadonlySet<string>,
  hostname: string,
  options: LookupOptions,
): Promise<readonly LookupAddress[]> {
  const family = isIP(hostname);
  if (family !== 0) {
    if (isPrivateAddress(hostname) && !literal.has(hostname)) throw refused(hostname);
    return [{ address: hostname, family }];
  }
  const all = await lookupAll(hostname);
  if (all.some((a) => isPrivateAddress(a.address))) throw refused(hostname);
  const want = options.family === "IPv4" ? 4 : options.family === "IPv6" ? 6 : options.family;
  const addresses = want === 4 || want === 6 ? all.filter((a) => a.family === want) : all;
  if (addresses.length === 0) throw Object.assign(new Error(`${hostname} has no address of the family asked for`), { code: "ENOTFOUND" });
  return addresses;
}

function deliverLookup(addresses: readonly LookupAddress[], options: LookupOptions, callback: Parameters<LookupFunction>[2]): void {
  if (options.all) {
    callback(null, [...addresses]);
    return;
  }
  const [first] = addresses as [LookupAddress];
  callback(null, first.address, first.family);
}

function refused(hostname: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${hostname} resolves to a loopback, private or link-local address`), { code: ADDRESS_REFUSED_CODE });
}
