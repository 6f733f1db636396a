/** The configuration module's public surface: load a file, match routes, describe the result. */
export { describeConfig } from "./describe.js";
export { formatDuration, parseDuration } from "./duration.js";
export { loadConfig, parseConfig } from "./load.js";
export type { ParseConfigOptions } from "./load.js";
export { createRouteMatcher, routeTableOf } from "./routes.js";
export type { RouteMatcher, RouteTable } from "./routes.js";
export { configJsonSchema, ROUTE_NAME_PATTERN } from "./schema.js";
export type { Config, RouteConfig } from "./types.js";
