/**
 * Watches the config file for changes, in a way that survives how Kubernetes updates a mounted
 * ConfigMap: `dir/slowlane.yaml` is a symlink to `..data/slowlane.yaml`, and `..data` is itself a
 * symlink that is replaced by a rename. A watch on the file follows the old inode and goes quiet
 * after the first swap, so two watches are kept instead:
 *   - `fs.watch` on the directory: any entry created, renamed or written in it (the `..data`
 *     swap, an editor's write-and-rename, an in-place write) wakes the watcher at once;
 *   - `fs.watchFile` polling, which stats the path through its symlinks: the fallback where
 *     directory events do not arrive (network and overlay filesystems, a missing directory).
 * Events are debounced, the file is read, and `onChange` runs only when the text differs from
 * the last text seen, one call at a time.
 */
import { readFileSync, unwatchFile, watch, watchFile } from "node:fs";
import type { FSWatcher } from "node:fs";
import { dirname } from "node:path";
import type { Logger } from "../log.js";

export interface ConfigWatcherOptions {
  file: string;
  log: Logger;
  /** Called when the file's text changed; never twice at once. Its errors are logged. */
  onChange: () => Promise<unknown>;
  /** How often the file is stat'ed as a fallback; default 2 s. */
  pollIntervalMs?: number;
  /** Quiet time after an event before the file is read (writes come in bursts); default 100 ms. */
  debounceMs?: number;
}

export interface ConfigWatcher {
  close(): void;
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    // Missing for a moment (an editor's rename, a ConfigMap swap) or gone: the next event tells.
    return undefined;
  }
}

export function createConfigWatcher(options: ConfigWatcherOptions): ConfigWatcher {
  const { file, log } = options;
  const debounceMs = options.debounceMs ?? 100;
  let lastText = readText(file);
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let again = false;
  let closed = false;

  async function check(): Promise<void> {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      const text = readText(file);
      if (text === undefined || text === lastText) return;
      lastText = text;
      log.info({ file }, "config file changed");
      await options.onChange();
    } catch (err) {
      log.error({ err, file }, "config reload after a file change failed");
    } finally {
      running = false;
      if (again && !closed) {
        again = false;
        schedule();
      }
    }
  }

  function schedule(): void {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(() => void check(), debounceMs);
  }

  let dirWatcher: FSWatcher | undefined;
  try {
    dirWatcher = watch(dirname(file), { persistent: false }, () => schedule());
    dirWatcher.on("error", (err) => {
      log.debug({ err, file }, "directory watch stopped; polling the config file only");
      dirWatcher?.close();
      dirWatcher = undefined;
    });
  } catch (err) {
    log.debug({ err, file }, "cannot watch the config file's directory; polling it only");
  }
  const onStat = (): void => schedule();
  watchFile(file, { interval: options.pollIntervalMs ?? 2_000, persistent: false }, onStat);

  return {
    close() {
      closed = true;
      clearTimeout(timer);
      dirWatcher?.close();
      unwatchFile(file, onStat);
    },
  };
}
