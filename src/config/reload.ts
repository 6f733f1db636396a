/**
 * Reloading the config file while running: read and validate it with the loader used at start,
 * refuse it whole when invalid (the last good config stays in force), else hand it to `apply`,
 * which puts it in force (provisioning, workers, the proxy's routes). Keys that need a restart
 * keep their running values and are named in a warning. One reload at a time.
 */
import { ConfigError } from "../errors.js";
import type { Logger } from "../log.js";
import { diffConfig, isUnchanged, toReloadedConfig } from "./diff.js";
import type { ConfigChanges } from "./diff.js";
import { loadConfig } from "./load.js";
import type { Config } from "./types.js";

export const ReloadResults = ["success", "failure"] as const;
export type ReloadResult = (typeof ReloadResults)[number];

export interface ConfigReloaderOptions {
  file: string;
  /** Environment for overrides (`NATS_URL`), as at start; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  log: Logger;
  /** The config in force. */
  current(): Config;
  /** Puts `next` in force; a rejection refuses it (the current config stays). Not called when nothing changed. */
  apply(next: Config, changes: ConfigChanges): Promise<void>;
  /** Told of every reload's result (metrics). */
  onResult?(result: ReloadResult): void;
}

export interface ConfigReloader {
  /** Reads the file again; true when its config is in force afterwards, false when it was refused. */
  reload(): Promise<boolean>;
}

/** `file:line:column key.path: message`, one per problem, as `slowlane check` prints them. */
function problemLines(err: ConfigError): string[] {
  return err.message
    .split("\n")
    .slice(1)
    .map((line) => line.trim());
}

export function createConfigReloader(options: ConfigReloaderOptions): ConfigReloader {
  const { file, log } = options;
  let queue: Promise<unknown> = Promise.resolve();

  async function reloadNow(): Promise<boolean> {
    let loaded: Config;
    try {
      loaded = loadConfig(file, options.env ?? process.env);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      log.error({ file, problems: problemLines(err) }, "config reload refused");
      options.onResult?.("failure");
      return false;
    }
    const previous = options.current();
    const changes = diffConfig(previous, loaded);
    const next = toReloadedConfig(previous, loaded);
    if (changes.needsRestart.length > 0) {
      // The rest applies; these keep their running values until slowlane restarts.
      log.warn({ file, keys: changes.needsRestart }, "config change needs a restart");
    }
    const applied = diffConfig(previous, next);
    if (isUnchanged(applied)) {
      log.info({ file, routes: previous.routes.map((r) => r.name) }, "config reloaded: nothing to change");
      options.onResult?.("success");
      return true;
    }
    try {
      await options.apply(next, applied);
    } catch (err) {
      log.error({ err, file }, "config reload failed; the previous config stays in force");
      options.onResult?.("failure");
      return false;
    }
    log.info(
      {
        file,
        routes: next.routes.map((r) => r.name),
        changed: applied.keys,
        routesAdded: applied.routesAdded,
        routesRemoved: applied.routesRemoved,
        routesChanged: applied.routesChanged,
        ...(applied.routesReordered ? { routesReordered: true } : {}),
      },
      "config reloaded",
    );
    options.onResult?.("success");
    return true;
  }

  return {
    reload() {
      const run = queue.then(reloadNow);
      queue = run.catch(() => undefined);
      return run;
    },
  };
}
