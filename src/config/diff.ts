/**
 * What a reload changes. Most of the config applies to the next request or the next job; a few keys are read
 * once at start (sockets, the NATS connection, the jobs path, the logger) and keep their running values until
 * a restart.
 */
import type { Config, RouteConfig } from "./types.js";
import { isRecord } from "../shared/guards.js";

/** Keys (as written in the file) that need a restart to take effect. */
export const RESTART_KEYS = [
  "listen",
  "admin.listen",
  "nats.servers",
  "nats.stream",
  "nats.embedded",
  "nats.tls",
  "nats.auth",
  "jobs.path",
  "log.redactHeaders",
] as const;

export interface ConfigChanges {
  /** Keys whose value changed, dotted as in {@link Config} (`defaults.timeoutMs`), routes apart; sorted. */
  readonly keys: readonly string[];
  readonly routesAdded: readonly string[];
  readonly routesRemoved: readonly string[];
  /** Routes in both whose settings changed. */
  readonly routesChanged: readonly string[];
  /** True when the routes kept are now in another order (which decides the first match). */
  readonly routesReordered: boolean;
  /** The changed keys among {@link RESTART_KEYS}. */
  readonly needsRestart: readonly string[];
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function changedKeys(previous: unknown, next: unknown, path: string, out: string[]): void {
  const atom = (RESTART_KEYS as readonly string[]).includes(path);
  if (atom || !isRecord(previous) || !isRecord(next)) {
    if (!same(previous, next)) out.push(path);
    return;
  }
  for (const key of new Set([...Object.keys(previous), ...Object.keys(next)])) {
    if (path === "" && key === "routes") continue;
    changedKeys(previous[key], next[key], path === "" ? key : `${path}.${key}`, out);
  }
}

export function diffConfig(previous: Config, next: Config): ConfigChanges {
  const keys: string[] = [];
  changedKeys(previous, next, "", keys);
  keys.sort();
  const before = new Map<string, RouteConfig>(previous.routes.map((r) => [r.name, r]));
  const after = new Map<string, RouteConfig>(next.routes.map((r) => [r.name, r]));
  const kept = next.routes.filter((r) => before.has(r.name)).map((r) => r.name);
  return {
    keys,
    routesAdded: next.routes.filter((r) => !before.has(r.name)).map((r) => r.name),
    routesRemoved: previous.routes.filter((r) => !after.has(r.name)).map((r) => r.name),
    routesChanged: kept.filter((name) => !same(before.get(name), after.get(name))),
    routesReordered: !same(kept, previous.routes.filter((r) => after.has(r.name)).map((r) => r.name)),
    needsRestart: keys.filter((k) => (RESTART_KEYS as readonly string[]).includes(k)),
  };
}

/** True when nothing at all differs. */
export function isUnchanged(changes: ConfigChanges): boolean {
  return (
    changes.keys.length === 0 &&
    changes.routesAdded.length === 0 &&
    changes.routesRemoved.length === 0 &&
    changes.routesChanged.length === 0 &&
    !changes.routesReordered
  );
}

/** `next` with the keys that need a restart kept as they run now: the config a reload puts in force. */
export function toReloadedConfig(previous: Config, next: Config): Config {
  return Object.freeze({
    ...next,
    listen: previous.listen,
    admin: previous.admin,
    jobs: previous.jobs,
    log: previous.log,
    nats: Object.freeze({
      ...next.nats,
      servers: previous.nats.servers,
      stream: previous.nats.stream,
      embedded: previous.nats.embedded,
      tls: previous.nats.tls,
      auth: previous.nats.auth,
    }),
  });
}
