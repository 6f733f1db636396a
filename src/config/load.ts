/**
 * Load → validate → freeze. Reads YAML with positions kept, validates it with the one schema, reports every
 * problem at once (key path, line:column, how to fix it), applies environment overrides and deep-freezes the
 * result. Never throws anything but {@link ConfigError} for a bad file.
 */
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit } from "yaml";
import type { Document } from "yaml";
import type { z } from "zod";
import { ConfigError } from "../errors.js";
import type { ConfigProblem } from "../errors.js";
import { allowedKeys, checkRouteTable, configSchema, splitServers } from "./schema.js";
import type { Config } from "./types.js";
import { readBounded } from "../shared/read-bounded.js";

/**
 * Aliases a file may expand in total. Legitimate configs use a handful; a "billion laughs" document needs
 * thousands, and yaml refuses to build it past this count instead of exhausting memory.
 */
const MAX_ALIAS_COUNT = 100;

/**
 * Far above any real config (the commented example is a few KiB). A wrong path (`/dev/zero`, a huge log
 * file) is refused at this size instead of being read until memory runs out.
 */
const MAX_FILE_BYTES = 1024 * 1024;

export interface ParseConfigOptions {
  /** File name used in messages; `<config>` when absent. */
  file?: string;
  /**
   * Environment for overrides (`NATS_URL`). Absent means no overrides, so parsing stays a pure function;
   * {@link loadConfig} passes `process.env`.
   */
  env?: NodeJS.ProcessEnv;
}

/** Reads and parses a configuration file; a missing or unreadable file is a {@link ConfigError} too. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string | undefined;
  try {
    text = readBounded(file, MAX_FILE_BYTES);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const message =
      code === "ENOENT"
        ? "file not found (pass the path of a slowlane.yaml; config/slowlane.yaml is a commented example)"
        : `cannot read the file (${code ?? String(cause)})`;
    throw new ConfigError(file, [{ path: "", message }], { cause });
  }
  if (text === undefined) {
    const message = `larger than ${MAX_FILE_BYTES / 1024 / 1024} MiB: not a slowlane config (is the path right?)`;
    throw new ConfigError(file, [{ path: "", message }]);
  }
  return parseConfig(text, { file, env });
}

/**
 * Parses the text of a configuration file into a deeply frozen {@link Config}. An empty file gives every default.
 * Throws a {@link ConfigError} listing every problem found, sorted by position.
 */
export function parseConfig(text: string, opts: ParseConfigOptions = {}): Config {
  const { file, env } = opts;
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter,
    prettyErrors: false,
    merge: true,
    uniqueKeys: true,
    // yaml would otherwise print some warnings (e.g. about mapping keys) with process.emitWarning.
    logLevel: "error",
  });
  const at = (offset: number | undefined): Pick<ConfigProblem, "line" | "column"> => {
    if (offset === undefined) return {};
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };

  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({ path: "", message: `YAML syntax error: ${e.message}`, ...at(e.pos[0]) })),
    );
  }

  let input: unknown;
  try {
    input = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (cause) {
    const { message, offset, path } = describeToJsError(doc, cause);
    throw new ConfigError(file, [{ path: formatPath(path), message, ...at(offset) }], { cause });
  }
  // An empty file (or one with only comments) is an empty mapping: all defaults.
  input ??= {};

  const problems: ConfigProblem[] = [];
  const result = configSchema.safeParse(input);
  if (!result.success) problems.push(...result.error.issues.flatMap((issue) => toProblems(issue, doc, at)));
  for (const p of checkRouteTable(input)) {
    problems.push({ path: formatPath(p.path), message: p.message, ...at(offsetOf(doc, p.path, "value")) });
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(file, sortByPosition(problems));

  return deepFreeze(applyEnv(result.data, env));
}

/** `NATS_URL` (comma-separated) replaces `nats.servers`, `embedded` included; an empty value is ignored. */
function applyEnv(config: Config, env: NodeJS.ProcessEnv | undefined): Config {
  const servers = splitServers(env?.NATS_URL ?? "");
  if (servers.length === 0) return config;
  return { ...config, nats: { ...config.nats, servers, embedded: undefined } };
}

function toProblems(
  issue: z.core.$ZodIssue,
  doc: Document,
  at: (offset: number | undefined) => Pick<ConfigProblem, "line" | "column">,
): ConfigProblem[] {
  const path = issue.path.filter((s): s is string | number => typeof s !== "symbol");
  if (issue.code === "unrecognized_keys") {
    // One problem per key, pointing at the key itself.
    return issue.keys.map((key) => ({
      path: formatPath([...path, key]),
      message: unknownKeyMessage(key, path),
      ...at(offsetOf(doc, [...path, key], "key")),
    }));
  }
  return [{ path: formatPath(path), message: issue.message, ...at(offsetOf(doc, path, "value")) }];
}

function unknownKeyMessage(key: string, parent: readonly (string | number)[]): string {
  const allowed = allowedKeys(parent);
  const suggestion = closest(key, allowed);
  if (suggestion !== undefined) return `unknown key ${JSON.stringify(key)} (did you mean ${JSON.stringify(suggestion)}?)`;
  // A key one level too high, e.g. `timeout` at the top instead of under `defaults` (possibly misspelt too).
  for (const home of allowed) {
    const nested = closest(key, [...allowedKeys([...parent, home]), ...allowedKeys([...parent, home, 0])]);
    if (nested !== undefined) return `unknown key ${JSON.stringify(key)} (did you mean ${JSON.stringify(nested)} under "${home}:"?)`;
  }
  return `unknown key ${JSON.stringify(key)} (allowed: ${allowed.join(", ")})`;
}

/** The allowed key nearest to `key` by edit distance (case-insensitive), if it is plausibly a typo. */
function closest(key: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(key.length / 3)) + 1;
  for (const candidate of candidates) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** `routes[1].timeout`; keys that are not identifiers are quoted: `log["x y"]`. */
function formatPath(path: readonly (string | number)[]): string {
  let out = "";
  for (const segment of path) {
    if (typeof segment === "number") out += `[${segment}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(segment)) out += out === "" ? segment : `.${segment}`;
    else out += `[${JSON.stringify(segment)}]`;
  }
  return out;
}

/**
 * Source offset for a problem at `path`: the value there (or its key when the value is empty, as in `nats:`),
 * the key itself when asked, or the nearest mapping that exists when the key is missing.
 */
function offsetOf(doc: Document, path: readonly (string | number)[], want: "key" | "value"): number | undefined {
  let node: unknown = doc.contents;
  let key: unknown;
  for (const segment of path) {
    if (isAlias(node)) node = node.resolve(doc);
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(segment));
      if (pair === undefined) return rangeStart(node);
      key = pair.key;
      next = pair.value;
    } else if (isSeq(node) && typeof segment === "number") {
      key = undefined;
      next = node.items[segment];
      if (next === undefined) return rangeStart(node);
    } else {
      return rangeStart(node) ?? rangeStart(key);
    }
    node = next;
  }
  if (want === "key") return rangeStart(key) ?? rangeStart(node);
  return rangeStart(node) ?? rangeStart(key);
}

/** Where a node starts, or undefined for nodes with no text (an empty value). */
function rangeStart(node: unknown): number | undefined {
  if (isPair(node)) return rangeStart(node.key);
  if (typeof node !== "object" || node === null || !("range" in node)) return undefined;
  const range = (node as { range?: [number, number, number] }).range;
  if (range === undefined || range[0] === range[1]) return undefined;
  return range[0];
}

/**
 * yaml builds values (aliases, merge keys) only in `toJS` and throws there; turn that into a message and the
 * place of the node at fault.
 */
function describeToJsError(
  doc: Document,
  cause: unknown,
): { message: string; offset: number | undefined; path: (string | number)[] } {
  const text = cause instanceof Error ? cause.message : String(cause);
  let offset: number | undefined;
  let path: (string | number)[] = [];
  if (/excessive alias count/i.test(text)) {
    visit(doc, {
      Alias(_, node, ancestors) {
        offset = node.range?.[0];
        path = keyPath(ancestors, node);
        return visit.BREAK;
      },
    });
    return {
      message: `YAML aliases expand too much (more than ${MAX_ALIAS_COUNT} nodes): write the values out instead of nesting aliases`,
      offset,
      path,
    };
  }
  if (/unresolved alias/i.test(text)) {
    visit(doc, {
      Alias(_, node, ancestors) {
        if (node.resolve(doc) !== undefined) return undefined;
        offset = node.range?.[0];
        path = keyPath(ancestors, node);
        return visit.BREAK;
      },
    });
    return { message: `YAML error: ${text} (define the &anchor before using the *alias)`, offset, path };
  }
  if (/merge/i.test(text)) {
    visit(doc, {
      Pair(_, pair, ancestors) {
        // With merge keys on, yaml gives `<<` a symbol value; its source text is still "<<".
        if (!isScalar(pair.key) || pair.key.source !== "<<") return undefined;
        offset = rangeStart(pair.key);
        path = keyPath(ancestors, pair);
        return visit.BREAK;
      },
    });
    return { message: `YAML error: ${text} (write "<<: *anchor" where &anchor is a mapping)`, offset, path };
  }
  return { message: `YAML error: ${text}`, offset, path };
}

/** The key path (`routes[1][0]`) of a node, from the ancestors `visit` passes (document first). */
function keyPath(ancestors: readonly unknown[], node: unknown): (string | number)[] {
  const chain = [...ancestors, node];
  const path: (string | number)[] = [];
  for (let i = 0; i + 1 < chain.length; i++) {
    const parent = chain[i];
    const child = chain[i + 1];
    if (isSeq(parent)) path.push(parent.items.indexOf(child));
    else if (isPair(parent) && parent.value === child) {
      const key = parent.key;
      // A merge key's value is a symbol; it reads as "<<" in the file.
      path.push(isScalar(key) ? (typeof key.value === "symbol" ? "<<" : String(key.value)) : String(key));
    }
  }
  return path;
}

/** Problems in file order (those without a position last), stable for equal positions. */
function sortByPosition(problems: ConfigProblem[]): ConfigProblem[] {
  const key = (p: ConfigProblem): [number, number] => [p.line ?? Number.MAX_SAFE_INTEGER, p.column ?? 0];
  return problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => {
      const [la, ca] = key(a.p);
      const [lb, cb] = key(b.p);
      return la - lb || ca - cb || a.i - b.i;
    })
    .map(({ p }) => p);
}

/** Freezes `value` and everything it reaches; the config is shared by every request, so nobody may edit it. */
function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
