/**
 * The load generator, always in its own process: the autocannon CLI (`-c 64 -p 1 --json`) for a
 * fixed URL, or `loadgen-ids.ts` (autocannon's API, same output) to cycle through many URLs.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { cpuTimeMs, ROOT } from "./procs.js";

const run = promisify(execFile);
const AUTOCANNON = join(ROOT, "node_modules/autocannon/autocannon.js");
const LOADGEN_IDS = join(ROOT, "test/bench/loadgen-ids.ts");

export const CONNECTIONS = 64;

/** What we keep of an autocannon result. */
export interface LoadResult {
  /** Responses per second over the whole run. */
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  total: number;
  /** Responses whose status was not the one expected, plus errors and timeouts. */
  bad: number;
  statusCounts: Record<string, number>;
}

interface AutocannonJson {
  requests: { total: number };
  latency: { p50: number; p99: number };
  duration: number;
  errors: number;
  timeouts: number;
  statusCodeStats?: Record<string, { count: number }>;
}

function toResult(json: AutocannonJson, expectStatus: number): LoadResult {
  const statusCounts: Record<string, number> = {};
  for (const [code, { count }] of Object.entries(json.statusCodeStats ?? {})) statusCounts[code] = count;
  const good = statusCounts[String(expectStatus)] ?? 0;
  const answered = Object.values(statusCounts).reduce((a, b) => a + b, 0);
  return {
    reqPerSec: json.requests.total / json.duration,
    p50Ms: json.latency.p50,
    p99Ms: json.latency.p99,
    total: json.requests.total,
    bad: answered - good + json.errors + json.timeouts,
    statusCounts,
  };
}

export interface CannonOptions {
  url: string;
  /** Seconds; ignored when `amount` is set. */
  durationS: number;
  /** Stop after this many requests instead of after `durationS`. */
  amount?: number;
  method?: string;
  body?: string;
  headers?: Record<string, string>;
  expectStatus?: number;
  connections?: number;
}

/** One autocannon CLI run in a child process. */
export async function cannon(opts: CannonOptions): Promise<LoadResult> {
  const args = [AUTOCANNON, "-c", String(opts.connections ?? CONNECTIONS), "-p", "1", "--json", "--no-progress"];
  if (opts.amount !== undefined) args.push("-a", String(opts.amount));
  else args.push("-d", String(opts.durationS));
  if (opts.method) args.push("-m", opts.method);
  if (opts.body !== undefined) args.push("-b", opts.body);
  for (const [k, v] of Object.entries(opts.headers ?? {})) args.push("-H", `${k}=${v}`);
  args.push(opts.url);
  const { stdout } = await run(process.execPath, args, { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
  return toResult(JSON.parse(stdout) as AutocannonJson, opts.expectStatus ?? 200);
}

/** One run that cycles through `<base><prefix><id>` for every id in `idsFile`, round robin across connections. */
export async function cannonIds(opts: {
  base: string;
  prefix: string;
  idsFile: string;
  durationS: number;
  expectStatus: number;
  /** Stop after this many requests instead of after `durationS`. */
  amount?: number;
}): Promise<LoadResult> {
  const args = ["--import", "tsx", LOADGEN_IDS, opts.base, opts.prefix, opts.idsFile, String(opts.durationS), String(CONNECTIONS)];
  if (opts.amount !== undefined) args.push(String(opts.amount));
  const { stdout } = await run(process.execPath, args, { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
  return toResult(JSON.parse(stdout) as AutocannonJson, opts.expectStatus);
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] as number;
}

export interface Comparison {
  a: LoadResult[];
  b: LoadResult[];
}

/**
 * Measures two targets the same way: one warm-up run each, then `runs` measured rounds that
 * alternate which goes first, so drift on a shared machine hits both alike.
 */
export async function compare(
  runs: number,
  warmupS: number,
  a: (durationS?: number) => Promise<LoadResult>,
  b: (durationS?: number) => Promise<LoadResult>,
): Promise<Comparison> {
  await a(warmupS);
  await b(warmupS);
  const out: Comparison = { a: [], b: [] };
  for (let i = 0; i < runs; i++) {
    if (i % 2 === 0) {
      out.b.push(await b());
      out.a.push(await a());
    } else {
      out.a.push(await a());
      out.b.push(await b());
    }
  }
  return out;
}

/**
 * {@link compare} for any number of targets: one warm-up run each, then `runs` measured rounds,
 * each starting one target later than the last, so drift on a shared machine hits all alike.
 */
export async function compareMany<K extends string>(
  runs: number,
  warmupS: number,
  targets: Record<K, (durationS?: number) => Promise<LoadResult>>,
): Promise<Record<K, LoadResult[]>> {
  const names = Object.keys(targets) as K[];
  const out = Object.fromEntries(names.map((n) => [n, [] as LoadResult[]])) as Record<K, LoadResult[]>;
  for (const name of names) await targets[name](warmupS);
  for (let i = 0; i < runs; i++) {
    for (let j = 0; j < names.length; j++) {
      const name = names[(i + j) % names.length] as K;
      out[name].push(await targets[name]());
    }
  }
  return out;
}

/**
 * `run` that also records, for each measured run (not warm-ups, which pass a duration), the CPU
 * time per request of the processes `pids` (summed), in µs, into `usPerRequest`. On a shared
 * machine it moves much less than req/s.
 */
export function withCpu(pids: readonly number[], run: (durationS?: number) => Promise<LoadResult>, usPerRequest: number[]) {
  const cpu = () => pids.reduce((sum, pid) => sum + cpuTimeMs(pid), 0);
  return async (durationS?: number): Promise<LoadResult> => {
    const before = cpu();
    const result = await run(durationS);
    if (durationS === undefined) usPerRequest.push(((cpu() - before) * 1000) / result.total);
    return result;
  };
}

export const us = (n: number) => `${n.toFixed(0)} µs`;

export const med = {
  rps: (rs: LoadResult[]) => median(rs.map((r) => r.reqPerSec)),
  p99: (rs: LoadResult[]) => median(rs.map((r) => r.p99Ms)),
  bad: (rs: LoadResult[]) => rs.reduce((n, r) => n + r.bad, 0),
};
