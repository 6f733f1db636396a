/**
 * Route matching, on the hot path of every request: globs are compiled once, and a call does no more than a
 * method comparison and a regular-expression test per route until the first match.
 */
import picomatch from "picomatch";
import type { Config, RouteConfig } from "./types.js";

/** Returns the first route matching the request, or undefined when the request is passed through. */
export type RouteMatcher = (method: string, pathname: string) => RouteConfig | undefined;

interface CompiledRoute {
  readonly route: RouteConfig;
  readonly methods: readonly string[] | undefined;
  readonly matches: (pathname: string) => boolean;
}

/**
 * `dot`: URL segments starting with "." are ordinary (`/files/*` matches `/files/.env`); picomatch still never
 * lets `*` or `**` match a `.` or `..` segment.
 */
const GLOB_OPTIONS: picomatch.PicomatchOptions = { dot: true };

function compilePath(path: string): (pathname: string) => boolean {
  if (!picomatch.scan(path, GLOB_OPTIONS).isGlob) return (pathname) => pathname === path;
  // `*` is one segment, `**` any number including none: `/reports/**` matches `/reports` and `/reports/a/b`.
  const re = picomatch.makeRe(path, GLOB_OPTIONS);
  return (pathname) => pathname === path || re.test(pathname);
}

/**
 * Compiles `routes` into a matcher. The first route (in file order) whose methods include the request's
 * (case-insensitively; HEAD does not imply GET) and whose path matches wins. A route without `methods`
 * takes every method but OPTIONS: CORS preflights must be answered at once, by the backend, so a
 * route captures OPTIONS only when it lists it.
 */
export function createRouteMatcher(routes: readonly RouteConfig[]): RouteMatcher {
  const compiled: readonly CompiledRoute[] = routes.map((route) => ({
    route,
    methods: route.methods?.map((m) => m.toUpperCase()),
    matches: compilePath(route.path),
  }));
  return (method, pathname) => {
    // Node gives methods upper-case already; only upper-case a method that is not found as is.
    let upper: string | undefined;
    for (let i = 0; i < compiled.length; i++) {
      const { route, methods, matches } = compiled[i] as CompiledRoute;
      if (methods === undefined && (method === "OPTIONS" || (method.length === 7 && method.toUpperCase() === "OPTIONS"))) continue;
      if (methods !== undefined && !methods.includes(method)) {
        upper ??= method.toUpperCase();
        if (upper === method || !methods.includes(upper)) continue;
      }
      if (matches(pathname)) return route;
    }
    return undefined;
  };
}

/** A config's routes, indexed once: the matcher, and each route's settings by name. */
export interface RouteTable {
  readonly match: RouteMatcher;
  readonly names: readonly string[];
  /**
   * A route's settings by name. A route the config no longer has (its queued jobs are still worked
   * and looked up) gets the `defaults` under its own name.
   */
  settingsOf(name: string): RouteConfig;
}

const tables = new WeakMap<Config, RouteTable>();

/** The route table of a config, built once per config (a reload brings a new config object). */
export function routeTableOf(config: Config): RouteTable {
  let table = tables.get(config);
  if (table === undefined) {
    const byName = new Map(config.routes.map((r) => [r.name, r]));
    table = {
      match: createRouteMatcher(config.routes),
      names: config.routes.map((r) => r.name),
      settingsOf: (name) => byName.get(name) ?? { ...config.defaults, name, methods: undefined, path: "" },
    };
    tables.set(config, table);
  }
  return table;
}
