/**
 * The benchmark's one table: each figure, the baseline it is compared with (measured in the same
 * run), the ratio, the target and whether it is met. Printed as text and written as markdown
 * with the machine, Node and nats-server versions, for the README's "Performance" section.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus, totalmem, platform, release } from "node:os";
import { findNatsServerBinary } from "../../../scripts/nats-server.js";

export interface Row {
  scenario: string;
  /** slowlane's figure, formatted with its unit. */
  slowlane: string;
  /** What it is compared with, formatted with its unit ("" when the target is absolute). */
  baseline: string;
  /** slowlane / baseline (or the absolute figure compared with the target); undefined when only reported. */
  ratio?: number | undefined;
  target: string;
  met?: boolean | undefined;
  note?: string | undefined;
  /** Which row of the target table ({@link TARGETS} in `targets.ts`) this figure is, if any. */
  key?: string | undefined;
  /** Printed instead of met / missed / reported: "not run", "not built". */
  result?: string | undefined;
}

export const fmt = {
  rps: (n: number) => `${Math.round(n).toLocaleString("en-US")} req/s`,
  jobs: (n: number) => `${n.toFixed(n < 100 ? 1 : 0)} jobs/s`,
  ms: (n: number) => `${n < 10 ? n.toFixed(2) : n.toFixed(1)} ms`,
  mib: (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`,
  ratio: (n: number | undefined) => (n === undefined || Number.isNaN(n) ? "–" : `${n.toFixed(2)}`),
};

/** A "ratio at least / at most" row. */
export function ratioRow(
  scenario: string,
  slowlane: number,
  baseline: number,
  show: (n: number) => string,
  want: { atLeast?: number; atMost?: number },
  note?: string,
): Row {
  const ratio = slowlane / baseline;
  const met = want.atLeast !== undefined ? ratio >= want.atLeast : ratio <= (want.atMost as number);
  const target = want.atLeast !== undefined ? `≥ ${want.atLeast}` : `≤ ${want.atMost}x`;
  return { scenario, slowlane: show(slowlane), baseline: show(baseline), ratio, target, met, note };
}

export function machine(): Record<string, string> {
  const cpu = cpus();
  let nats = "unknown";
  try {
    nats = execFileSync(findNatsServerBinary(), ["--version"], { encoding: "utf8" }).trim();
  } catch {
    // Reported as unknown.
  }
  return {
    date: new Date().toISOString(),
    machine: `${cpu.length} × ${cpu[0]?.model.trim() ?? "cpu"}, ${(totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, ${platform()} ${release()}`,
    node: process.version,
    "nats-server": nats,
  };
}

function cells(row: Row): string[] {
  const result = row.result ?? (row.met === undefined ? "reported" : row.met ? "met" : "**missed**");
  return [row.scenario, row.slowlane, row.baseline, fmt.ratio(row.ratio), row.target, result, row.note ?? ""];
}

const HEAD = ["scenario", "slowlane", "baseline", "ratio", "target", "result", "note"];

export function toText(rows: Row[]): string {
  const table = [HEAD, ...rows.map((r) => cells(r).map((c) => c.replaceAll("**", "")))];
  const widths = HEAD.map((_, i) => Math.max(...table.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ").trimEnd();
  return [line(table[0] as string[]), widths.map((w) => "-".repeat(w)).join("  "), ...table.slice(1).map(line)].join("\n");
}

/** A titled table of the report. */
export interface Section {
  title: string;
  rows: Row[];
}

export function toMarkdown(sections: readonly Section[], meta: Record<string, string>, settings: string): string {
  const esc = (c: string) => c.replaceAll("|", "\\|");
  const table = (rows: Row[]) => [
    `| ${HEAD.join(" | ")} |`,
    `| ${HEAD.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${cells(r).map(esc).join(" | ")} |`),
  ];
  return [
    `Measured ${meta.date} on ${meta.machine}; Node ${meta.node}; ${meta["nats-server"]}.`,
    `Settings: ${settings}. Every ratio compares two figures measured in the same run; figures are medians.`,
    ...sections.filter((s) => s.rows.length > 0).flatMap((s) => ["", `**${s.title}**`, "", ...table(s.rows)]),
    "",
  ].join("\n");
}

export function writeMarkdown(file: string, markdown: string): void {
  writeFileSync(file, markdown);
}
