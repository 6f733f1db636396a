/**
 * The one definition of slowlane's YAML file. The same zod schema validates the file (every message says how to
 * fix the value), turns it into the resolved {@link Config} (defaults merged, durations in milliseconds) and emits
 * a JSON Schema for editors. Objects are strict: an unknown key is an error, not a silently ignored typo.
 */
import { z } from "zod";
import { DURATION_PATTERN, formatDuration, parseDuration } from "./duration.js";
import { formatSize, parseSize, SIZE_PATTERN } from "./size.js";
import { AsyncModes } from "./types.js";
import type { BackoffConfig, CallbacksConfig, Config, NatsAuthConfig, NatsTlsConfig, RouteConfig } from "./types.js";
import { compileCallbackPattern } from "./url-pattern.js";
import { isRecord } from "../shared/guards.js";

/** Methods a route may list: a closed list, so a typo (`POTS`) is an error instead of a route that never matches. */
const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;

/** Defaults of the file, as written in it. */
const DEFAULTS = {
  listen: "0.0.0.0:8080",
  upstream: "http://127.0.0.1:3000",
  natsServers: "nats://127.0.0.1:4222",
  stream: "SLOWLANE",
  ackWait: "30s",
  jobsPath: "/_slowlane/jobs",
  timeout: "10m",
  ttl: "1h",
  attempts: 3,
  concurrency: 8,
  retryAfter: "2s",
  backoff: { initial: "1s", max: "60s", factor: 2, jitter: true },
  retryOn: [] as number[],
  maxBodySize: "32MiB",
  maxResponseSize: "256MiB",
  replicas: 1,
  admin: "0.0.0.0:9090",
  shutdownTimeout: "25s",
  owner: ["authorization"],
  wait: "0s",
  async: "always",
  storeDir: ".slowlane/nats",
  maxConnections: 10_000,
  maxInflightBodySize: "64MiB",
} as const;

/** `nats.servers: embedded`: slowlane starts its own nats-server. */
const EMBEDDED = "embedded";
/** The longest a request may be held for its job to finish (route `wait`, `Prefer: wait`). */
export const MAX_WAIT_MS = 60_000;

/** A route name: it becomes a NATS subject token and a consumer name. */
export const ROUTE_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const STREAM_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
/** An HTTP header name (RFC 9110 token). */
const HEADER_NAME_PATTERN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A URL path without query, fragment, glob star or blanks. */
const JOBS_PATH_PATTERN = /^\/[^*?#\s]*$/;
/** Node.js timers overflow past 2^31-1 ms (24.8 days) and then fire at once; stay below. */
const MAX_TIMER_MS = 24 * 86_400_000;

/** Longest part of a string value quoted in a message. */
const MAX_SHOWN_CHARS = 80;

/** How a value from the file reads in a message: strings quoted, lists and mappings named. */
function showValue(value: unknown): string {
  if (value === null) return "nothing";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") {
    // A huge value (a pasted certificate, a runaway line) must not make a huge message.
    return JSON.stringify(value.length > MAX_SHOWN_CHARS ? `${value.slice(0, MAX_SHOWN_CHARS)}…` : value);
  }
  return String(value);
}

/** Messages for absent and empty values, the same everywhere. */
function absent(input: unknown): string | undefined {
  if (input === undefined) return "is required";
  if (input === null) return "has no value (set one, or remove the key to use the default)";
  return undefined;
}

/** An error map: `describe` explains a present but wrong value. */
function explain(describe: (input: unknown) => string): (issue: { readonly input?: unknown }) => string {
  return (issue) => absent(issue.input) ?? describe(issue.input);
}

// ---- values --------------------------------------------------------------------------------------------------

/** A duration string (`30s`), resolved to milliseconds within [min, max]. */
function duration(limits: { min?: number; max?: number } = {}) {
  const min = limits.min ?? 1;
  const max = limits.max ?? Number.MAX_SAFE_INTEGER;
  const typeError = explain((input) =>
    typeof input === "number"
      ? `${input} has no unit: write "${input}s" (units: ms, s, m, h, d)`
      : `must be a duration like 30s, 10m or 2h, got ${showValue(input)}`,
  );
  return z
    .string({ error: typeError })
    .regex(DURATION_PATTERN, { error: (issue) => `${showValue(issue.input)} is not a duration (use 30s, 10m, 2h)` })
    .transform((text, ctx) => {
      // Zero is a duration only where the key allows it (`wait: 0s`: do not wait).
      const ms = min === 0 && /^0+(\.0+)?(ms|s|m|h|d)$/.test(text) ? 0 : parseDuration(text);
      if (ms !== undefined && ms >= min && ms <= max) return ms;
      const message =
        ms === undefined
          ? `${showValue(text)} is not a positive duration (use 30s, 10m, 2h)`
          : ms < min
            ? `${showValue(text)} is too short (at least ${formatDuration(min)})`
            : `${showValue(text)} is too long (at most ${formatDuration(max)})`;
      ctx.addIssue({ code: "custom", message, input: text });
      return z.NEVER;
    });
}

/** An integer within [min, max]. */
function wholeNumber(min: number, max: number) {
  const error = explain((input) => `must be a whole number from ${min} to ${max}, got ${showValue(input)}`);
  return z.int({ error }).min(min, { error }).max(max, { error });
}

/** A size (`32MiB`, or a whole number of bytes), resolved to bytes within [1, max]. */
function size(max: number) {
  const typeError = explain(
    (input) => `must be a size like 512KiB, 32MiB or 1GiB (or a number of bytes), got ${showValue(input)}`,
  );
  return z.union([z.int({ error: typeError }), z.string({ error: typeError })], { error: typeError }).transform((value, ctx) => {
    const bytes = parseSize(value);
    if (bytes !== undefined && bytes <= max) return bytes;
    const message =
      typeof value === "string" && !SIZE_PATTERN.test(value)
        ? `${showValue(value)} is not a size (use 512KiB, 32MiB, 1GiB; kB/MB/GB are powers of 1000)`
        : bytes === undefined
          ? `${showValue(value)} is not a positive size`
          : `${showValue(value)} is too large (at most ${formatSize(max)})`;
    ctx.addIssue({ code: "custom", message, input: value });
    return z.NEVER;
  });
}

/** A number within [min, max], fractions allowed. */
function decimal(min: number, max: number) {
  const error = explain((input) => `must be a number from ${min} to ${max}, got ${showValue(input)}`);
  return z.number({ error }).min(min, { error }).max(max, { error });
}

const listenError = explain(
  (input) => `${showValue(input)} is not a listen address (use host:port like 0.0.0.0:8080, or a port number 0-65535)`,
);

/** `host:port`, `[ipv6]:port` or a bare port (string or number); a bare port listens on every IPv4 interface. */
function parseListen(value: number | string): { host: string; port: number } | undefined {
  if (typeof value === "number") return { host: "0.0.0.0", port: value };
  const match = /^(?:(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]/]+)):)?(\d{1,5})$/.exec(value);
  if (match === null) return undefined;
  const port = Number(match[3]);
  if (port > 65_535) return undefined;
  return { host: match[1] ?? match[2] ?? "0.0.0.0", port };
}

const listen = z
  .union([z.int({ error: listenError }).min(0, { error: listenError }).max(65_535, { error: listenError }), z.string()], {
    error: listenError,
  })
  .transform((value, ctx) => {
    const address = parseListen(value);
    if (address === undefined) {
      ctx.addIssue({ code: "custom", message: listenError({ input: value }), input: value });
      return z.NEVER;
    }
    return address;
  });

/** Returns the normalized URL, or why the text is not a usable upstream. */
function parseUpstream(text: string): { url: string } | { problem: string } {
  const example = "use e.g. http://127.0.0.1:3000";
  if (!URL.canParse(text)) return { problem: `${showValue(text)} is not an absolute URL (${example})` };
  const url = new URL(text);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { problem: `${showValue(text)} is not an http(s) URL (${example})` };
  }
  // URL drops an empty "?" or "#", so look at the text itself.
  if (text.includes("?") || text.includes("#")) {
    return { problem: `${showValue(text)} must not have a query or fragment (requests bring their own)` };
  }
  return { url: url.href.replace(/\/+$/, "") };
}

const upstream = z
  .string({ error: explain((input) => `must be a URL like http://127.0.0.1:3000, got ${showValue(input)}`) })
  .transform((text, ctx) => {
    const result = parseUpstream(text);
    if ("problem" in result) {
      ctx.addIssue({ code: "custom", message: result.problem, input: text });
      return z.NEVER;
    }
    return result.url;
  });

/** Splits a comma-separated server list (the form `NATS_URL` uses too); blanks are dropped. */
export function splitServers(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

const serversError = explain(
  (input) => `must be a NATS URL or a non-empty list of them (e.g. nats://127.0.0.1:4222), got ${showValue(input)}`,
);
const serverUrl = z.string({ error: serversError }).min(1, { error: serversError });
const servers = z
  .union([serverUrl, z.array(serverUrl, { error: serversError }).min(1, { error: serversError })], {
    error: serversError,
  })
  .transform((value, ctx) => {
    const list = (typeof value === "string" ? [value] : value).flatMap(splitServers);
    if (list.length === 0) {
      ctx.addIssue({ code: "custom", message: serversError({ input: value }), input: value });
      return z.NEVER;
    }
    return list;
  });

const stream = z
  .string({ error: explain((input) => `must be a stream name like SLOWLANE, got ${showValue(input)}`) })
  .regex(STREAM_PATTERN, {
    error: (issue) => `${showValue(issue.input)} is not a valid stream name (use 1-32 letters, digits, "_" or "-")`,
  });

const jobsPath = z
  .string({ error: explain((input) => `must be a URL path like /_slowlane/jobs, got ${showValue(input)}`) })
  .regex(JOBS_PATH_PATTERN, {
    error: (issue) =>
      typeof issue.input === "string" && !issue.input.startsWith("/")
        ? `${showValue(issue.input)} must start with "/" (e.g. /_slowlane/jobs)`
        : `${showValue(issue.input)} must be a plain path: no "*", "?", "#" or spaces`,
  })
  .transform((text, ctx) => {
    const path = text.replace(/\/+$/, "");
    if (path === "") {
      ctx.addIssue({ code: "custom", message: `must not be "/" (every route would be under it)`, input: text });
      return z.NEVER;
    }
    return path;
  });

const headerName = z
  .string({ error: explain((input) => `must be a header name like x-api-key, got ${showValue(input)}`) })
  .regex(HEADER_NAME_PATTERN, { error: (issue) => `${showValue(issue.input)} is not a valid header name` });

const methodsError = explain((input) => `must be a list of methods like [GET, POST], got ${showValue(input)}`);
const method = z
  .string({ error: explain((input) => `must be a method name like POST, got ${showValue(input)}`) })
  .refine((text) => (HTTP_METHODS as readonly string[]).includes(text.toUpperCase()), {
    error: (issue) =>
      `${showValue(issue.input)} is not an HTTP method (must be one of ${HTTP_METHODS.join(", ")})`,
  })
  .transform((text) => text.toUpperCase());

const routeName = z
  .string({ error: explain((input) => `must be a name like "reports", got ${showValue(input)}`) })
  .regex(ROUTE_NAME_PATTERN, {
    error: (issue) =>
      `${showValue(issue.input)} is not a valid route name (use 1-64 letters, digits, "_" or "-")`,
  });

const routePath = z
  .string({ error: explain((input) => `must be a path like /reports/**, got ${showValue(input)}`) })
  .regex(/^\//, { error: (issue) => `${showValue(issue.input)} must start with "/" (write "/${String(issue.input)}")` })
  .regex(/^[^?#\s]*$/, {
    error: (issue) => `${showValue(issue.input)} must not contain "?", "#" or spaces (routes match the path only)`,
  })
  .superRefine((path, ctx) => {
    // Requests are matched on their normalised path (proxy/normalize-path.ts): a route written any
    // other way would never match, or would match less than it says.
    const problem = routePathProblem(path);
    if (problem) ctx.addIssue({ code: "custom", message: `${showValue(path)} ${problem}` });
  });

/** Unreserved characters (RFC 3986): requests have them decoded before matching. */
const UNRESERVED_ESCAPE = /%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])/;

/** Why a route path could never match a normalised request path, or `undefined`. */
function routePathProblem(path: string): string | undefined {
  if (/(^|\/)\.{1,2}(\/|$)/.test(path)) return "has a dot segment (requests are matched after . and .. are resolved)";
  if (path.includes("\\") || /%(2f|5c)/i.test(path)) return "has a slash or backslash escape (such requests are refused)";
  if (UNRESERVED_ESCAPE.test(path)) return "escapes a letter, digit or -._~ (requests are matched with those decoded: write the character)";
  if (/%[0-9A-F]?[a-f]/.test(path)) return "has a percent-escape in lower case (requests are matched with escapes upper-cased: write %2F as %2F)";
  return undefined;
}

// ---- sections ------------------------------------------------------------------------------------------------

function mapping(what: string) {
  return explain((input) => `${what} must be a mapping (key: value lines), got ${showValue(input)}`);
}

const statusError = explain((input) => `must be an HTTP status from 400 to 599, got ${showValue(input)}`);
const retryOn = z
  .array(z.int({ error: statusError }).min(400, { error: statusError }).max(599, { error: statusError }), {
    error: explain((input) => `must be a list of HTTP statuses like [502, 503, 504], got ${showValue(input)}`),
  })
  .transform((list) => [...new Set(list)].sort((a, b) => a - b));

/** The largest body slowlane stores: the Object Store takes any size, this bounds the disk and the wait. */
const MAX_BODY_BYTES = 16 * 1024 ** 3;

/** `backoff` as written; every key optional so a route can change one and inherit the rest. */
const backoffInput = z.strictObject(
  {
    initial: duration({ max: MAX_TIMER_MS }).optional(),
    max: duration({ max: MAX_TIMER_MS }).optional(),
    factor: decimal(1, 10).optional(),
    jitter: z.boolean({ error: explain((input) => `must be true or false, got ${showValue(input)}`) }).optional(),
  },
  { error: mapping("backoff") },
);

type BackoffInput = z.output<typeof backoffInput>;

function resolveBackoff(input: BackoffInput | undefined, base: BackoffConfig): BackoffConfig {
  return {
    initialMs: input?.initial ?? base.initialMs,
    maxMs: input?.max ?? base.maxMs,
    factor: input?.factor ?? base.factor,
    jitter: input?.jitter ?? base.jitter,
  };
}

const DEFAULT_BACKOFF: BackoffConfig = {
  initialMs: parseDuration(DEFAULTS.backoff.initial) as number,
  maxMs: parseDuration(DEFAULTS.backoff.max) as number,
  factor: DEFAULTS.backoff.factor,
  jitter: DEFAULTS.backoff.jitter,
};

/** `owner`: header names, or `cookie:<name>`. */
const ownerEntry = z
  .string({ error: explain((input) => `must be a header name or cookie:<name>, got ${showValue(input)}`) })
  .regex(/^(cookie:[!#$%&'*+.^_`|~0-9A-Za-z-]+|[!#$%&'*+.^_`|~0-9A-Za-z-]+)$/i, {
    error: (issue) => `${showValue(issue.input)} is not a header name or cookie:<name> (e.g. authorization, x-api-key, cookie:session)`,
  })
  .transform((entry) => (entry.toLowerCase().startsWith("cookie:") ? `cookie:${entry.slice(7)}` : entry.toLowerCase()));
const owner = z
  .array(ownerEntry, { error: explain((input) => `must be a list like [authorization], or [] for no binding, got ${showValue(input)}`) })
  .transform((list) => [...new Set(list)]);

/** Headers a client must never be handed through `resultHeaders` (they describe the connection or the body). */
const RESERVED_RESULT_HEADERS = new Set(["content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer", "te"]);
const resultHeaders = z
  .record(
    z.string().regex(HEADER_NAME_PATTERN, { error: (issue) => `${showValue(issue.input)} is not a header name` }),
    z.string({ error: explain((input) => `must be a header value (a string), got ${showValue(input)}`) }).regex(/^[\t\x20-\x7e\x80-\xff]*$/, {
      error: "must not contain control characters",
    }),
    { error: explain((input) => `must be a mapping of header names to values, got ${showValue(input)}`) },
  )
  .superRefine((map, ctx) => {
    for (const name of Object.keys(map)) {
      if (RESERVED_RESULT_HEADERS.has(name.toLowerCase())) {
        ctx.addIssue({ code: "custom", path: [name], message: `"${name}" cannot be set on results (it describes the connection or the body)` });
      }
    }
  })
  .transform((map) => Object.entries(map).map(([name, value]) => [name.toLowerCase(), value] as const));

const asyncMode = z.enum(AsyncModes, { error: explain((input) => `must be always or prefer, got ${showValue(input)}`) });

const callbackPattern = z
  .string({ error: explain((input) => `must be a URL pattern like https://hooks.example.com/**, got ${showValue(input)}`) })
  .superRefine((pattern, ctx) => {
    try {
      compileCallbackPattern(pattern);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: err instanceof Error ? err.message : String(err) });
    }
  });
const callbacks = z
  .strictObject(
    {
      allow: z.array(callbackPattern, { error: explain((input) => `must be a list of URL patterns, got ${showValue(input)}`) }).min(1, {
        error: "must list at least one URL pattern",
      }),
      secretFile: z.string({ error: explain((input) => `must be the path of a file holding whsec_<base64>, got ${showValue(input)}`) }).min(1),
    },
    { error: mapping("callbacks") },
  )
  .transform((c): CallbacksConfig => ({ allow: c.allow, secretFile: c.secretFile }));

/** Route settings: every key a route may set and `defaults` may set for all of them. */
const settings = {
  timeout: duration({ max: MAX_TIMER_MS }),
  ttl: duration({ min: 1_000 }),
  attempts: wholeNumber(1, 100),
  concurrency: wholeNumber(1, 10_000),
  retryAfter: duration(),
  backoff: backoffInput,
  retryOn,
  maxBodySize: size(MAX_BODY_BYTES),
  maxResponseSize: size(MAX_BODY_BYTES),
  owner,
  resultHeaders,
  deadline: duration({ min: 1_000, max: MAX_TIMER_MS }),
  wait: duration({ min: 0, max: MAX_WAIT_MS }),
  async: asyncMode,
  callbacks,
};

type Settings = Omit<RouteConfig, "name" | "methods" | "path">;

/** Retry-After is whole seconds: rounded up so clients never poll sooner than configured. */
function toRetryAfterS(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1_000));
}

const filePath = (what: string) =>
  z.string({ error: explain((input) => `must be the path of ${what}, got ${showValue(input)}`) }).min(1, { error: `must be the path of ${what}` });

const natsTls = z
  .strictObject(
    { ca: filePath("a CA certificate (PEM)").optional(), cert: filePath("a client certificate (PEM)").optional(), key: filePath("a client key (PEM)").optional() },
    { error: mapping("nats.tls") },
  )
  .transform((t): NatsTlsConfig => ({ ca: t.ca, cert: t.cert, key: t.key }));

const natsAuth = z
  .strictObject(
    {
      credsFile: filePath("a .creds file").optional(),
      nkeyFile: filePath("an nkey seed file").optional(),
      user: z.string({ error: explain((input) => `must be a user name, got ${showValue(input)}`) }).min(1).optional(),
      passwordFile: filePath("a file holding the password").optional(),
      tokenFile: filePath("a file holding the token").optional(),
    },
    { error: mapping("nats.auth") },
  )
  .superRefine((a, ctx) => {
    const methods = [a.credsFile && "credsFile", a.nkeyFile && "nkeyFile", (a.user || a.passwordFile) && "user", a.tokenFile && "tokenFile"].filter(Boolean);
    if (methods.length > 1) ctx.addIssue({ code: "custom", message: `use one of credsFile, nkeyFile, user + passwordFile or tokenFile, not ${methods.join(" and ")}` });
    if ((a.user === undefined) !== (a.passwordFile === undefined)) ctx.addIssue({ code: "custom", message: "user and passwordFile go together" });
  })
  .transform((a): NatsAuthConfig => ({ credsFile: a.credsFile, nkeyFile: a.nkeyFile, user: a.user, passwordFile: a.passwordFile, tokenFile: a.tokenFile }));

const natsSection = z.strictObject(
  {
    servers: z.union([z.literal(EMBEDDED), servers], { error: serversError }).prefault(DEFAULTS.natsServers),
    storeDir: filePath("a directory for the embedded nats-server's JetStream store").default(DEFAULTS.storeDir),
    stream: stream.default(DEFAULTS.stream),
    ackWait: duration({ min: 100, max: MAX_TIMER_MS }).prefault(DEFAULTS.ackWait),
    replicas: wholeNumber(1, 5).default(DEFAULTS.replicas),
    tls: natsTls.optional(),
    auth: natsAuth.optional(),
  },
  { error: mapping("nats") },
);

const serverSection = z
  .strictObject(
    {
      maxConnections: wholeNumber(0, 1_000_000).default(DEFAULTS.maxConnections),
      maxInflightBodySize: size(MAX_BODY_BYTES).prefault(DEFAULTS.maxInflightBodySize),
    },
    { error: mapping("server") },
  )
  .transform((s) => ({ maxConnections: s.maxConnections, maxInflightBodyBytes: s.maxInflightBodySize }));

const securitySection = z
  .strictObject({ keyFile: filePath("a key file (make one with: slowlane keygen > FILE)").optional() }, { error: mapping("security") })
  .transform((s) => ({ keyFile: s.keyFile }));

const defaultsSection = z
  .strictObject(
    {
      timeout: settings.timeout.prefault(DEFAULTS.timeout),
      ttl: settings.ttl.prefault(DEFAULTS.ttl),
      attempts: settings.attempts.default(DEFAULTS.attempts),
      concurrency: settings.concurrency.default(DEFAULTS.concurrency),
      retryAfter: settings.retryAfter.prefault(DEFAULTS.retryAfter),
      backoff: settings.backoff.optional(),
      retryOn: settings.retryOn.default(DEFAULTS.retryOn),
      maxBodySize: settings.maxBodySize.prefault(DEFAULTS.maxBodySize),
      maxResponseSize: settings.maxResponseSize.prefault(DEFAULTS.maxResponseSize),
      owner: settings.owner.default([...DEFAULTS.owner]),
      resultHeaders: settings.resultHeaders.prefault({}),
      deadline: settings.deadline.optional(),
      wait: settings.wait.prefault(DEFAULTS.wait),
      async: settings.async.default(DEFAULTS.async),
      callbacks: settings.callbacks.optional(),
    },
    { error: mapping("defaults") },
  )
  .transform(
    (d): Settings => ({
      timeoutMs: d.timeout,
      ttlMs: d.ttl,
      attempts: d.attempts,
      concurrency: d.concurrency,
      retryAfterS: toRetryAfterS(d.retryAfter),
      backoff: resolveBackoff(d.backoff, DEFAULT_BACKOFF),
      retryOn: d.retryOn,
      maxBodyBytes: d.maxBodySize,
      maxResponseBytes: d.maxResponseSize,
      owner: d.owner,
      resultHeaders: d.resultHeaders,
      deadlineMs: d.deadline,
      waitMs: d.wait,
      async: d.async,
      callbacks: d.callbacks,
    }),
  );

const route = z.strictObject(
  {
    name: routeName,
    methods: z
      .array(method, { error: methodsError })
      .min(1, { error: "must list at least one method (remove the key to match every method)" })
      .optional(),
    path: routePath,
    timeout: settings.timeout.optional(),
    ttl: settings.ttl.optional(),
    attempts: settings.attempts.optional(),
    concurrency: settings.concurrency.optional(),
    retryAfter: settings.retryAfter.optional(),
    backoff: settings.backoff.optional(),
    retryOn: settings.retryOn.optional(),
    maxBodySize: settings.maxBodySize.optional(),
    maxResponseSize: settings.maxResponseSize.optional(),
    owner: settings.owner.optional(),
    resultHeaders: settings.resultHeaders.optional(),
    deadline: settings.deadline.optional(),
    wait: settings.wait.optional(),
    async: settings.async.optional(),
    callbacks: settings.callbacks.optional(),
  },
  { error: explain((input) => `a route must be a mapping with at least name and path, got ${showValue(input)}`) },
);

type RouteInput = z.output<typeof route>;

function resolveRoute(r: RouteInput, defaults: Settings): RouteConfig {
  return {
    name: r.name,
    methods: r.methods === undefined ? undefined : [...new Set(r.methods)],
    path: r.path,
    timeoutMs: r.timeout ?? defaults.timeoutMs,
    ttlMs: r.ttl ?? defaults.ttlMs,
    attempts: r.attempts ?? defaults.attempts,
    concurrency: r.concurrency ?? defaults.concurrency,
    retryAfterS: r.retryAfter === undefined ? defaults.retryAfterS : toRetryAfterS(r.retryAfter),
    backoff: resolveBackoff(r.backoff, defaults.backoff),
    retryOn: r.retryOn ?? defaults.retryOn,
    maxBodyBytes: r.maxBodySize ?? defaults.maxBodyBytes,
    maxResponseBytes: r.maxResponseSize ?? defaults.maxResponseBytes,
    owner: r.owner ?? defaults.owner,
    resultHeaders: r.resultHeaders ?? defaults.resultHeaders,
    deadlineMs: r.deadline ?? defaults.deadlineMs,
    waitMs: r.wait ?? defaults.waitMs,
    async: r.async ?? defaults.async,
    callbacks: r.callbacks ?? defaults.callbacks,
  };
}

const DEFAULT_ADMIN_LISTEN = parseListen(DEFAULTS.admin) as { host: string; port: number };

/** The whole file. Its output is the resolved {@link Config} before environment overrides (`NATS_URL`). */
export const configSchema = z
  .strictObject(
    {
      listen: listen.prefault(DEFAULTS.listen),
      upstream: upstream.prefault(DEFAULTS.upstream),
      nats: natsSection.prefault({}),
      jobs: z.strictObject({ path: jobsPath.prefault(DEFAULTS.jobsPath) }, { error: mapping("jobs") }).prefault({}),
      admin: z.strictObject({ listen: listen.optional() }, { error: mapping("admin") }).prefault({}),
      server: serverSection.prefault({}),
      security: securitySection.prefault({}),
      shutdownTimeout: duration({ max: MAX_TIMER_MS }).prefault(DEFAULTS.shutdownTimeout),
      log: z
        .strictObject(
          {
            redactHeaders: z
              .array(headerName, { error: explain((i) => `must be a list of header names, got ${showValue(i)}`) })
              .default([]),
          },
          { error: mapping("log") },
        )
        .prefault({}),
      defaults: defaultsSection.prefault({}),
      routes: z
        .array(route, { error: explain((i) => `must be a list of routes (lines starting with "- "), got ${showValue(i)}`) })
        .default([]),
    },
    { error: (issue) => `the file must be a mapping of keys (listen, upstream, nats, ...), got ${showValue(issue.input)}` },
  )
  .transform(
    (c): Config => ({
      listen: c.listen,
      upstream: c.upstream,
      nats: {
        servers: c.nats.servers === EMBEDDED ? [] : c.nats.servers,
        embedded: c.nats.servers === EMBEDDED ? { storeDir: c.nats.storeDir } : undefined,
        stream: c.nats.stream,
        ackWaitMs: c.nats.ackWait,
        replicas: c.nats.replicas,
        tls: c.nats.tls,
        auth: c.nats.auth,
      },
      admin: { listen: c.admin.listen ?? DEFAULT_ADMIN_LISTEN, listenExplicit: c.admin.listen !== undefined },
      server: c.server,
      security: c.security,
      shutdownTimeoutMs: c.shutdownTimeout,
      jobs: c.jobs,
      log: { redactHeaders: [...new Set(c.log.redactHeaders.map((h) => h.toLowerCase()))] },
      defaults: c.defaults,
      routes: c.routes.map((r) => resolveRoute(r, c.defaults)),
    }),
  );

/** A problem the schema cannot see key by key; `path` as zod writes it. */
export interface RouteTableProblem {
  readonly path: readonly (string | number)[];
  readonly message: string;
}

/**
 * Checks that need the whole route list: unique names (ignoring case, as NATS consumer names end up as file
 * names) and no route at or under `jobs.path`. It reads the raw input defensively, so these problems are
 * reported along with the schema's instead of after they are fixed.
 */
export function checkRouteTable(input: unknown): RouteTableProblem[] {
  if (!isRecord(input) || !Array.isArray(input.routes)) return [];
  const problems: RouteTableProblem[] = [];
  const jobs = isRecord(input.jobs) ? input.jobs.path : undefined;
  const jobsPath =
    jobs === undefined ? DEFAULTS.jobsPath : typeof jobs === "string" ? jobs.replace(/\/+$/, "") : undefined;
  const seen = new Map<string, { index: number; name: string }>();
  input.routes.forEach((r: unknown, i) => {
    if (!isRecord(r)) return;
    if (typeof r.name === "string" && ROUTE_NAME_PATTERN.test(r.name)) {
      const key = r.name.toLowerCase();
      const first = seen.get(key);
      if (first === undefined) seen.set(key, { index: i, name: r.name });
      else {
        problems.push({
          path: ["routes", i, "name"],
          message: `duplicate route name ${showValue(r.name)}: routes[${first.index}] is named ${showValue(first.name)} (names must be unique, ignoring case)`,
        });
      }
    }
    if (jobsPath !== undefined && jobsPath !== "" && typeof r.path === "string") {
      if (r.path === jobsPath || r.path.startsWith(`${jobsPath}/`)) {
        problems.push({
          path: ["routes", i, "path"],
          message: `${showValue(r.path)} is at or under jobs.path ${showValue(jobsPath)}, where job status is served; pick another path or change jobs.path`,
        });
      }
    }
  });
  return problems;
}

type AnySchema = z.core.$ZodType;

/** Looks through wrappers (optional, default, transform...) to the schema that parses the value. */
function unwrap(schema: AnySchema): AnySchema {
  const def = (schema as z.core.$ZodTypes)._zod.def;
  switch (def.type) {
    case "optional":
    case "default":
    case "prefault":
    case "nullable":
      return unwrap(def.innerType);
    case "pipe":
      return unwrap(def.in);
    default:
      return schema;
  }
}

/** The keys allowed in the mapping at `path` (e.g. `["routes", 0]`), or [] when that is not a mapping. */
export function allowedKeys(path: readonly PropertyKey[]): string[] {
  let schema = unwrap(configSchema);
  for (const segment of path) {
    const def = (schema as z.core.$ZodTypes)._zod.def;
    let next: AnySchema | undefined;
    if (def.type === "object" && typeof segment === "string") next = def.shape[segment];
    else if (def.type === "array") next = def.element;
    if (next === undefined) return [];
    schema = unwrap(next);
  }
  const def = (schema as z.core.$ZodTypes)._zod.def;
  return def.type === "object" ? Object.keys(def.shape) : [];
}

/** JSON Schema (draft 2020-12) of the YAML file, for editors' completion and validation. */
export function configJsonSchema(): z.core.JSONSchema.BaseSchema {
  return z.toJSONSchema(configSchema, { io: "input", unrepresentable: "any" });
}
