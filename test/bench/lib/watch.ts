/**
 * Watching a slowlane process while a scenario runs: its RSS sampled often (the peak is what a
 * container limit sees), and its `/healthz` asked every 250 ms, to tell whether it answered
 * throughout, and how many answers came within the liveness probe's timeout (`deploy/`: 2 s;
 * Kubernetes restarts the process after 3 probes in a row, 10 s apart, past it).
 */
import { request } from "node:http";
import { rssBytes } from "./procs.js";
import type { Proc } from "./procs.js";

/** The liveness probe's `timeoutSeconds` and `periodSeconds` in deploy/kubernetes/base/app-deployment.yaml. */
const LIVENESS_TIMEOUT_MS = 2_000;
const LIVENESS_PERIOD_MS = 10_000;
const PROBE_INTERVAL_MS = 250;
const RSS_INTERVAL_MS = 100;

export interface WatchResult {
  /** RSS when the watch started, and its peak since. */
  startRss: number;
  peakRss: number;
  /** `/healthz` probes sent; those not answered 200 at all (within the liveness period); those answered past the liveness timeout. */
  probes: number;
  failedProbes: number;
  slowProbes: number;
  slowestProbeMs: number;
}

export interface Watch {
  stop(): Promise<WatchResult>;
}

/** The admin URL a slowlane process logged ("admin listening"). */
export function adminUrlOf(proc: Proc): string {
  for (const line of proc.output().split("\n")) {
    try {
      const parsed = JSON.parse(line) as { msg?: string; url?: string };
      if (parsed.msg === "admin listening" && parsed.url) return parsed.url;
    } catch {
      // not a log line
    }
  }
  throw new Error(`${proc.name} logged no admin URL`);
}

function probe(url: string): Promise<{ ok: boolean; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const done = (ok: boolean) => resolve({ ok, ms: performance.now() - started });
    const req = request(`${url}/healthz`, { agent: false, timeout: LIVENESS_PERIOD_MS }, (res) => {
      res.resume();
      res.on("end", () => done(res.statusCode === 200));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => done(false));
    req.end();
  });
}

/** Starts sampling `proc`'s RSS and probing its `/healthz` until `stop()`. */
export function watchProcess(proc: Proc): Watch {
  const adminUrl = adminUrlOf(proc);
  const result: WatchResult = { startRss: rssBytes(proc.pid), peakRss: 0, probes: 0, failedProbes: 0, slowProbes: 0, slowestProbeMs: 0 };
  result.peakRss = result.startRss;
  const sampler = setInterval(() => {
    try {
      result.peakRss = Math.max(result.peakRss, rssBytes(proc.pid));
    } catch {
      // the process is gone; its last sample stands
    }
  }, RSS_INTERVAL_MS);
  let stopped = false;
  const prober = (async () => {
    while (!stopped) {
      const started = performance.now();
      const { ok, ms } = await probe(adminUrl);
      result.probes += 1;
      if (!ok) result.failedProbes += 1;
      else if (ms > LIVENESS_TIMEOUT_MS) result.slowProbes += 1;
      result.slowestProbeMs = Math.max(result.slowestProbeMs, ms);
      await new Promise((r) => setTimeout(r, Math.max(0, PROBE_INTERVAL_MS - (performance.now() - started))));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await prober;
      clearInterval(sampler);
      try {
        result.peakRss = Math.max(result.peakRss, rssBytes(proc.pid));
      } catch {
        // gone
      }
      return result;
    },
  };
}
