/** The configuration module's public surface: load a file, match routes, describe the result. */
export { describeConfig } from "./describe.js";
export { formatDuration, parseDuration } from "./duration.js";
export { loadConfig, parseConfig } from "./load.js";
export type { ParseConfigOptions } from "./load.js";
export { createRouteMatcher } from "./routes.js";
export type { RouteMatcher } from "./routes.js";
export { configJsonSchema, HTTP_METHODS } from "./schema.js";
export type { ConfigInput } from "./schema.js";
export type { Config, RouteConfig } from "./types.js";
