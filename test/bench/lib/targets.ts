/**
 * The target table of issue 13, row by row: what `npm run bench` must show met, or explain. Scenarios
 * tag the figure that answers a row with its `key`; {@link arrange} puts those rows first, in this
 * order, and prints a placeholder for a row whose scenario did not run (or is not built yet), so
 * the table always has every target. Every other figure follows in a second table.
 */
import type { Row, Section } from "./report.js";

export interface Target {
  readonly key: string;
  /** The scenario named in `BENCH_ONLY` that measures it. */
  readonly scenario: string;
  /** What the row says when it was not measured. */
  readonly label: string;
  readonly baseline: string;
  readonly target: string;
}

export const TARGETS: readonly Target[] = [
  { key: "passthrough-undici", scenario: "passthrough", label: "passthrough req/s", baseline: "bare undici Pool proxy", target: "≥ 0.9" },
  { key: "passthrough-undici-p99", scenario: "passthrough", label: "passthrough p99 latency", baseline: "bare undici Pool proxy", target: "≤ 1.2x" },
  { key: "passthrough-http-proxy", scenario: "passthrough", label: "passthrough req/s", baseline: "bare http-proxy-3", target: "≥ 1.3" },
  { key: "accept", scenario: "accept", label: "async accept (202) req/s", baseline: "minimal publish-and-202 server", target: "≥ 0.95" },
  { key: "poll-hit", scenario: "poll-hit", label: "status poll, cache hit, req/s", baseline: "bare fixed-body server", target: "≥ 0.9" },
  { key: "drain-1", scenario: "drain", label: "drain, backend 0 ms, one worker, jobs/s", baseline: "minimal worker", target: "≥ 0.8" },
  { key: "drain-4", scenario: "drain4", label: "drain, backend 0 ms, 4 workers, jobs/s (and per core)", baseline: "4 minimal workers", target: "≥ 0.8" },
  { key: "wait-p50", scenario: "wait", label: "`wait` route, backend 0 ms, one client at a time: added p50", baseline: "passthrough of the same call", target: "≤ 5 ms" },
];

/** The target table (every row of {@link TARGETS}, measured or not) and the other figures. */
export function arrange(rows: readonly Row[], ran: ReadonlySet<string>): Section[] {
  const targets = TARGETS.map((t): Row => {
    const found = rows.find((r) => r.key === t.key);
    if (found) return found;
    return { scenario: t.label, slowlane: "", baseline: t.baseline, target: t.target, result: ran.has(t.scenario) ? "error" : "not run", note: `BENCH_ONLY=${t.scenario}` };
  });
  const keys = new Set(TARGETS.map((t) => t.key));
  return [
    { title: "Targets (issue 13)", rows: targets },
    { title: "Other figures", rows: rows.filter((r) => r.key === undefined || !keys.has(r.key)) },
  ];
}
