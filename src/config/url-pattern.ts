/**
 * One `callbacks.allow` pattern: a full URL where `*` stands for one host label, one path segment or
 * (as `:*`) any port, and a final `**` for any path rest. Patterns and candidate URLs are both put
 * through the WHATWG URL parser, so `HOOKS.example.com`, `0x7f000001` and `/a/../b` compare in the
 * form a request would actually use.
 */

/** A compiled pattern; every field is in the form `new URL()` gives a candidate. */
export interface CallbackPattern {
  /** The pattern as written, for messages. */
  readonly source: string;
  readonly protocol: "http:" | "https:";
  /** The host split on dots; `*` matches one non-empty label. An IPv6 literal is one label, `[...]`. */
  readonly hostLabels: readonly string[];
  /** The host when it is an IP literal without wildcards (`10.0.0.5`, `[::1]`): the one address it names literally. */
  readonly address: string | undefined;
  /** The port, or `*` for any; a pattern without one means the scheme's default. */
  readonly port: number | "*";
  /** Path segments after the first `/`; `*` matches one non-empty segment, a final `**` any rest. */
  readonly path: readonly string[];
}

const ONE = "*";
const REST = "**";
const DEFAULT_PORTS = { "http:": 80, "https:": 443 } as const;
const SHAPE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(\/[^?#]*)?$/;
const HOST_LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

/** Compiles one pattern; throws an Error that says what is wrong and how to write it instead. */
export function compileCallbackPattern(source: string): CallbackPattern {
  if (/[?#]/.test(source)) throw new Error("a pattern has no query or fragment (they are not matched)");
  const shape = SHAPE.exec(source);
  if (!shape) throw new Error('not a full URL pattern (write it like "https://hooks.example.com/**")');
  const [, scheme = "", authority = "", rawPath = "/"] = shape;
  const protocol = `${scheme.toLowerCase()}:`;
  if (protocol !== "http:" && protocol !== "https:") throw new Error(`scheme "${scheme}" is not allowed (use http or https)`);
  if (authority.includes("@")) throw new Error("a pattern cannot contain credentials (user@host)");
  const { host, port } = splitAuthority(authority);
  const hostname = compileHost(protocol, host);
  const isLiteralAddress = hostname.startsWith("[") || /^\d+\.\d+\.\d+\.\d+$/.test(hostname);
  return {
    source,
    protocol,
    hostLabels: hostname.startsWith("[") ? [hostname] : hostname.split("."),
    address: isLiteralAddress && !hostname.includes(ONE) ? hostname : undefined,
    port: compilePort(protocol, port),
    path: compilePath(rawPath),
  };
}

/** True when `url` (already parsed) is one the pattern allows; its query and fragment are not looked at. */
export function matchesCallbackPattern(pattern: CallbackPattern, url: URL): boolean {
  if (url.protocol !== pattern.protocol) return false;
  const port = url.port === "" ? DEFAULT_PORTS[pattern.protocol] : Number(url.port);
  if (pattern.port !== ONE && pattern.port !== port) return false;
  const labels = url.hostname.startsWith("[") ? [url.hostname] : url.hostname.split(".");
  if (labels.length !== pattern.hostLabels.length) return false;
  if (!pattern.hostLabels.every((want, i) => (want === ONE ? labels[i] !== "" : want === labels[i]))) return false;
  return matchesPath(pattern.path, url.pathname.slice(1).split("/"));
}

function matchesPath(pattern: readonly string[], segments: readonly string[]): boolean {
  for (const [i, want] of pattern.entries()) {
    if (want === REST) return true;
    const got = segments[i];
    if (got === undefined) return false;
    if (want === ONE ? got === "" : want !== got) return false;
  }
  return segments.length === pattern.length;
}

function splitAuthority(authority: string): { host: string; port: string | undefined } {
  const bracket = authority.startsWith("[") ? authority.indexOf("]") : -1;
  const colon = authority.indexOf(":", bracket + 1);
  if (colon === -1) return { host: authority, port: undefined };
  return { host: authority.slice(0, colon), port: authority.slice(colon + 1) };
}

function compileHost(protocol: string, host: string): string {
  if (host === "") throw new Error("the host is missing");
  if (!host.includes(ONE)) {
    try {
      return new URL(`${protocol}//${host}/`).hostname;
    } catch (cause) {
      throw new Error(`host "${host}" is not a valid host name or IP address`, { cause });
    }
  }
  if (host.startsWith("[")) throw new Error("an IPv6 address cannot contain * (name the address in full)");
  const labels = host.toLowerCase().split(".");
  for (const label of labels) {
    if (label === REST) throw new Error('** is only for the end of the path; use * for one host label');
    if (label !== ONE && !HOST_LABEL.test(label)) {
      throw new Error(`host label "${label}" is not valid; * stands for one whole label, as in *.example.com (write IDN hosts in punycode)`);
    }
  }
  return labels.join(".");
}

function compilePort(protocol: "http:" | "https:", port: string | undefined): number | "*" {
  if (port === undefined || port === "") return DEFAULT_PORTS[protocol];
  if (port === ONE) return ONE;
  const n = /^\d{1,5}$/.test(port) ? Number(port) : NaN;
  if (!(n >= 1 && n <= 65_535)) throw new Error(`port "${port}" is not a port number 1-65535 or *`);
  return n;
}

function compilePath(rawPath: string): string[] {
  const segments = rawPath.slice(1).split("/");
  return segments.map((segment, i) => {
    if (segment === REST) {
      if (i !== segments.length - 1) throw new Error("** must be the last path segment (it matches any rest of the path)");
      return REST;
    }
    if (segment === ONE) return ONE;
    if (segment.includes(ONE)) throw new Error(`path segment "${segment}" mixes * with other characters; * stands for one whole segment`);
    if (segment === "." || segment === ".." || segment.includes("\\")) throw new Error(`path segment "${segment}" is not allowed`);
    // The same encoding a candidate's pathname gets, so "a b" in a pattern matches "a%20b" in a URL.
    return new URL(`http://h/${segment}`).pathname.slice(1);
  });
}
