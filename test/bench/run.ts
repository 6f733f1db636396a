/**
 * `npm run bench`: slowlane against bare baselines, each scenario with its own processes
 * (nats-server, the bare backend, slowlane from dist/cli.js, baselines), the load from autocannon
 * in a separate process. Prints the target table (every row, `lib/targets.ts`) and the other
 * figures, and writes both as markdown to test/bench/last-run.md.
 *
 *   BENCH_ONLY=passthrough,accept   scenarios to run (default all): passthrough, accept, poll-hit,
 *                                   poll-miss, drain, drain4, busy, completion, sse, wait, memory, bounds, r3, tracing
 *   BENCH_DURATION=10               seconds per measured load run (warm-up: a third of it, ≥ 2 s)
 *   BENCH_RUNS=3                    measured runs per figure (medians are reported)
 *   BENCH_JOBS=100000               jobs for the memory scenarios (and unknown-id polls in bounds)
 *   BENCH_UPLOADS=200               concurrent 900 KiB uploads in 1-byte chunks (bounds)
 *   BENCH_DRAIN_JOBS=10000          jobs per drain measurement (drain, r3)
 *   BENCH_POLL_IDS=12000            finished jobs polled round robin (poll-miss; keep > 10 000, the LRU size)
 *   BENCH_COMPLETIONS=200           jobs timed in the completion and wait scenarios
 *   BENCH_SSE_CLIENTS=10000         waiting SSE clients on one proxy (sse)
 *   BENCH_QUICK=1                   a short run: 3 s runs, 10 000 jobs, 2 000 drain jobs, 50 completions,
 *                                   2 000 SSE clients, 20 uploads
 *   BENCH_PROFILE=1                 run slowlane under --cpu-prof and print profile summaries
 *   BENCH_NODE_ARGS="--trace-gc"    extra node flags for the slowlane processes
 *   BENCH_BOUNDS=stall,uploads,polls  which of the memory-bounds scenarios to run (default all)
 *   BENCH_OUT=path.md               where to write the markdown (default test/bench/last-run.md)
 * Needs `npm run build` first (slowlane runs from dist/).
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { BenchContext } from "./lib/context.js";
import { ROOT, WORK_DIR } from "./lib/procs.js";
import type { Row } from "./lib/report.js";
import { machine, toMarkdown, toText, writeMarkdown } from "./lib/report.js";
import { arrange } from "./lib/targets.js";
import { summarize } from "./profile-summary.js";
import { accept } from "./scenarios/accept.js";
import { completion } from "./scenarios/completion.js";
import { busy, drain } from "./scenarios/drain.js";
import { bounds } from "./scenarios/bounds.js";
import { drainWorkers } from "./scenarios/drain-workers.js";
import { memory } from "./scenarios/memory.js";
import { passthrough } from "./scenarios/passthrough.js";
import { polls } from "./scenarios/polls.js";
import { r3 } from "./scenarios/r3.js";
import { sseFanout, waitLatency } from "./scenarios/watch.js";
import { tracing } from "./scenarios/tracing.js";

const SCENARIOS = ["passthrough", "accept", "poll-hit", "poll-miss", "drain", "drain4", "busy", "completion", "sse", "wait", "memory", "bounds", "r3", "tracing"] as const;
type Scenario = (typeof SCENARIOS)[number];

function num(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}=${raw} is not a positive number`);
  return value;
}

const quick = process.env.BENCH_QUICK === "1";
const durationS = num("BENCH_DURATION", quick ? 3 : 10);
const ctx: BenchContext = {
  durationS,
  warmupS: Math.max(2, Math.round(durationS / 3)),
  runs: num("BENCH_RUNS", 3),
  jobs: num("BENCH_JOBS", quick ? 10_000 : 100_000),
  drainJobs: num("BENCH_DRAIN_JOBS", quick ? 2_000 : 10_000),
  pollIds: num("BENCH_POLL_IDS", 12_000),
  completions: num("BENCH_COMPLETIONS", quick ? 50 : 200),
  uploads: num("BENCH_UPLOADS", quick ? 20 : 200),
  profile: process.env.BENCH_PROFILE === "1",
  log: (message) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`),
};

const only = (process.env.BENCH_ONLY ?? "").split(",").map((s) => s.trim()).filter(Boolean);
const unknown = only.filter((s) => !(SCENARIOS as readonly string[]).includes(s));
if (unknown.length > 0) {
  console.error(`unknown scenario(s) ${unknown.join(", ")}; choose from ${SCENARIOS.join(", ")}`);
  process.exit(2);
}
if (!existsSync(join(ROOT, "dist/cli.js"))) {
  console.error("dist/cli.js is missing: run `npm run build` first");
  process.exit(2);
}
const selected = new Set<Scenario>(only.length > 0 ? (only as Scenario[]) : SCENARIOS);
const want = (s: Scenario) => selected.has(s);

const rows: Row[] = [];
const started = Date.now();
const failures: string[] = [];
async function step(name: string, fn: () => Promise<Row[]>): Promise<void> {
  try {
    rows.push(...(await fn()));
  } catch (err) {
    failures.push(name);
    console.error(`scenario ${name} failed:`, err);
    rows.push({ scenario: name, slowlane: "error", baseline: "", target: "", met: false, note: String((err as Error).message ?? err).split("\n")[0] });
  }
}

if (want("passthrough")) await step("passthrough", () => passthrough(ctx));
if (want("accept")) await step("accept", () => accept(ctx));
if (want("poll-hit") || want("poll-miss")) await step("polls", () => polls(ctx, { hit: want("poll-hit"), miss: want("poll-miss") }));
if (want("drain")) await step("drain", () => drain(ctx));
if (want("drain4")) await step("drain4", () => drainWorkers(ctx));
if (want("busy")) await step("busy", () => busy(ctx));
if (want("completion")) await step("completion", () => completion(ctx));
if (want("sse")) await step("sse", () => sseFanout(ctx, num("BENCH_SSE_CLIENTS", quick ? 2_000 : 10_000)));
if (want("wait")) await step("wait", () => waitLatency(ctx));
if (want("memory")) await step("memory", () => memory(ctx));
if (want("bounds")) await step("bounds", () => bounds(ctx));
if (want("r3")) await step("r3", () => r3(ctx));
if (want("tracing")) await step("tracing", () => tracing(ctx));

const meta = machine();
const settings = [
  `autocannon -c 64 -p 1, ${ctx.runs} × ${ctx.durationS} s runs after a ${ctx.warmupS} s warm-up`,
  `${ctx.jobs.toLocaleString("en-US")} jobs (memory), ${ctx.drainJobs.toLocaleString("en-US")} per drain`,
  "load generator, slowlane, baselines and nats-server on the same machine",
  ...(ctx.profile ? ["slowlane under --cpu-prof (figures not comparable)"] : []),
].join("; ");
const elapsed = `${((Date.now() - started) / 1000).toFixed(0)} s`;
console.log(`\nslowlane benchmark, ${meta.date}, ${meta.machine}, Node ${meta.node}, ${meta["nats-server"]}; took ${elapsed}\n`);
const sections = arrange(rows, selected);
for (const section of sections) if (section.rows.length > 0) console.log(`${section.title}\n\n${toText(section.rows)}\n`);
const out = process.env.BENCH_OUT ?? join(ROOT, "test/bench/last-run.md");
writeMarkdown(out, toMarkdown(sections, meta, settings));
console.log(`\nmarkdown: ${out}`);

if (ctx.profile) {
  const dir = join(WORK_DIR, "profiles");
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      for (const file of readdirSync(join(dir, name)).filter((f) => f.endsWith(".cpuprofile"))) {
        console.log(`\n=== profile ${name} ===\n${summarize(join(dir, name, file), 20)}`);
      }
    }
  }
}
console.log(`\nlogs and profiles: ${WORK_DIR}`);
process.exit(failures.length > 0 ? 1 : 0);
