/**
 * `slowlane jobs list|show|retry`: argv → one NATS connection → the operation → text or JSON lines.
 * It opens what a proxy or worker provisioned and never changes a stream's settings. Returns the
 * exit code (0 ok, 1 operational error, 2 usage error) for `cli.ts`, the only file that exits.
 */
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { loadConfig, ROUTE_NAME_PATTERN } from "../config/index.js";
import type { Config } from "../config/index.js";
import { ConfigError, NatsUnavailableError, UsageError, messageOf } from "../errors.js";
import { describeConnectError, toNatsAuthOptions } from "../nats/credentials.js";
import { openJetStream } from "../nats/open.js";
import type { JetStreamContext } from "../nats/context.js";
import { JobStatus } from "../jobs/record.js";
import { retryJob } from "../jobs/requeue.js";
import { listJobs, listPausedRoutes, retryFailedJobs, showJob } from "./job-queries.js";
import type { JobDetails, JobListing, PausedRoute } from "./job-queries.js";

export const JOBS_USAGE = `usage: slowlane jobs <subcommand> [--config FILE]

subcommands:
  list [--status S] [--route NAME] [--json]
                           job records, oldest change first: a table, or one JSON object per line
                           (S: ${Object.values(JobStatus).join(", ")}); a queued job that no worker
                           has started has no record yet: it is listed from the work queue, as queued;
                           routes paused because their backend is unreachable come first (stderr with --json)
  show <id>                the job's record as JSON, whether it is in the work queue, and its dead letter
  retry <id>               put a failed job back in the work queue from its dead letter
  retry --all-failed [--route NAME]
                           the same for every failed job whose result has not expired

exit status: 0 ok, 1 the operation failed (no such job, not failed, NATS unreachable), 2 usage error
`;

/** How long connecting to NATS may take before the command gives up. */
const CONNECT_TIMEOUT_MS = 5_000;
/** Longer error messages are cut in the table (`--json` has them whole). */
const MAX_TABLE_ERROR_CHARS = 100;

export interface CommandOutput {
  /** One result line (stdout). */
  out(text: string): void;
  /** One diagnostic line (stderr). */
  err(text: string): void;
}

export interface JobsCommandOptions {
  /** Config file when `--config` is not given. */
  defaultConfigFile: string;
  output: CommandOutput;
  env?: NodeJS.ProcessEnv;
}

type Invocation =
  | { command: "list"; status: string | undefined; route: string | undefined; json: boolean }
  | { command: "show"; id: string }
  | { command: "retry"; id: string }
  | { command: "retry-all"; route: string | undefined };

function parseInvocation(argv: string[]): { invocation: Invocation | "help"; configFile: string | undefined } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      status: { type: "string" },
      route: { type: "string" },
      json: { type: "boolean" },
      "all-failed": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const configFile = values.config;
  const [sub, ...args] = positionals;
  if (values.help || sub === undefined || sub === "help") return { invocation: "help", configFile };

  const { status, route, json = false, "all-failed": allFailed = false } = values;
  if (route !== undefined && !ROUTE_NAME_PATTERN.test(route)) throw new UsageError(`--route: "${route}" is not a route name`);
  const refuse = (option: string, used: unknown) => {
    if (used !== undefined && used !== false) throw new UsageError(`${option} does not apply to "jobs ${sub}"`);
  };

  switch (sub) {
    case "list": {
      if (args.length > 0) throw new UsageError(`unexpected argument: ${args.join(" ")}`);
      refuse("--all-failed", allFailed);
      const statuses: readonly string[] = Object.values(JobStatus);
      if (status !== undefined && !statuses.includes(status)) {
        throw new UsageError(`--status: "${status}" is not one of ${statuses.join(", ")}`);
      }
      return { invocation: { command: "list", status, route, json }, configFile };
    }
    case "show": {
      refuse("--status", status);
      refuse("--route", route);
      refuse("--json", json);
      refuse("--all-failed", allFailed);
      const [id, ...rest] = args;
      if (id === undefined || rest.length > 0) throw new UsageError("jobs show takes one job id");
      return { invocation: { command: "show", id }, configFile };
    }
    case "retry": {
      refuse("--status", status);
      refuse("--json", json);
      if (allFailed) {
        if (args.length > 0) throw new UsageError("jobs retry takes a job id or --all-failed, not both");
        return { invocation: { command: "retry-all", route }, configFile };
      }
      refuse("--route", route);
      const [id, ...rest] = args;
      if (id === undefined || rest.length > 0) throw new UsageError("jobs retry takes one job id (or --all-failed)");
      return { invocation: { command: "retry", id }, configFile };
    }
    default:
      throw new UsageError(`unknown jobs subcommand "${sub}"`);
  }
}

function isoSeconds(epochMs: number | undefined): string {
  return epochMs === undefined ? "-" : new Date(epochMs).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function errorCell(listing: JobListing): string {
  const error = listing.record?.error;
  if (!error) return "";
  const text = `${error.code}: ${error.message}`;
  return text.length > MAX_TABLE_ERROR_CHARS ? `${text.slice(0, MAX_TABLE_ERROR_CHARS - 1)}…` : text;
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
function toTable(rows: readonly (readonly string[])[]): string[] {
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? "").length))) ?? [];
  return rows.map((r) => r.map((cell, col) => (col === r.length - 1 ? cell : cell.padEnd(widths[col] ?? 0))).join("  ").trimEnd());
}

/**
 * One line per paused route, before the jobs: on stdout with the table, on stderr with `--json`
 * (whose stdout is job records only).
 */
function printPaused(paused: readonly PausedRoute[], json: boolean, output: CommandOutput): void {
  const print = (line: string): void => (json ? output.err(line) : output.out(line));
  for (const p of paused) {
    const workers = p.workers === 1 ? "1 worker" : `${p.workers} workers`;
    print(`route ${p.route} is paused: its backend is unreachable (circuit open in ${workers} since ${isoSeconds(p.since)}); its jobs wait`);
  }
  if (paused.length > 0 && !json) print("");
}

function printList(listings: readonly JobListing[], json: boolean, output: CommandOutput): void {
  if (json) {
    for (const l of listings) {
      // The record as stored (fields added later print too); a job without one says so.
      output.out(JSON.stringify(l.record ?? { id: l.id, route: l.route, status: l.status, attempts: 0, started: false }));
    }
    return;
  }
  if (listings.length === 0) {
    output.err("no jobs match");
    return;
  }
  const rows = listings.map((l) => [
    l.id,
    l.route,
    l.status,
    String(l.record?.attempts ?? 0),
    l.record ? isoSeconds(l.record.updatedAt) : "(not started)",
    errorCell(l),
  ]);
  for (const line of toTable([["ID", "ROUTE", "STATUS", "ATTEMPTS", "UPDATED", "ERROR"], ...rows])) output.out(line);
}

function toShowJson(details: JobDetails): Record<string, unknown> {
  return {
    id: details.id,
    route: details.route,
    status: details.status,
    inQueue: details.inQueue,
    deadLetter: details.deadLetter
      ? { deadAt: new Date(details.deadLetter.deadAt).toISOString(), bodyBytes: details.deadLetter.bodyBytes }
      : null,
    record: details.record ?? null,
  };
}

async function execute(context: JetStreamContext, invocation: Invocation, output: CommandOutput): Promise<number> {
  switch (invocation.command) {
    case "list": {
      const paused = (await listPausedRoutes(context)).filter((p) => invocation.route === undefined || p.route === invocation.route);
      printPaused(paused, invocation.json, output);
      printList(await listJobs(context, invocation), invocation.json, output);
      return 0;
    }
    case "show":
      output.out(JSON.stringify(toShowJson(await showJob(context, invocation.id)), null, 2));
      return 0;
    case "retry": {
      const result = await retryJob(context, invocation.id);
      output.out(`requeued ${result.id} (route ${result.route}, retry ${result.retries})`);
      if (result.warning) output.err(`slowlane jobs: ${result.id}: ${result.warning}`);
      return 0;
    }
    case "retry-all": {
      const outcomes = await retryFailedJobs(context, invocation.route);
      for (const o of outcomes) {
        if (o.ok) output.out(`requeued ${o.id} (route ${o.route}, retry ${o.retries})`);
        else output.err(`slowlane jobs: not retried: ${o.reason}`);
        if (o.ok && o.warning) output.err(`slowlane jobs: ${o.id}: ${o.warning}`);
      }
      const requeued = outcomes.filter((o) => o.ok).length;
      output.err(`${requeued} of ${outcomes.length} failed jobs requeued`);
      return requeued === outcomes.length ? 0 : 1;
    }
  }
}

/** Connects with the credentials and TLS of `nats.auth`, `nats.tls` and the NATS_* variables, as the proxy does. */
async function connectOnce(config: Config, env: NodeJS.ProcessEnv): Promise<NatsConnection> {
  if (config.nats.embedded !== undefined) {
    throw new NatsUnavailableError(
      "nats.servers is embedded: set NATS_URL to the embedded nats-server of the running slowlane (its start-up log gives the url)",
    );
  }
  const auth = toNatsAuthOptions({ env, tls: config.nats.tls, auth: config.nats.auth });
  const servers = config.nats.servers;
  try {
    // No reconnecting: an ops command fails fast and says why, where the proxy would keep trying.
    return await connect({ servers: [...servers], name: "slowlane-jobs", timeout: CONNECT_TIMEOUT_MS, reconnect: false, ...auth.options });
  } catch (err) {
    throw new NatsUnavailableError(describeConnectError(err, servers, auth), { cause: err });
  }
}

/** Runs `slowlane jobs …` (argv after the word `jobs`) and resolves with the exit code. */
export async function runJobsCommand(argv: string[], options: JobsCommandOptions): Promise<number> {
  const { output } = options;
  let parsed: ReturnType<typeof parseInvocation>;
  try {
    parsed = parseInvocation(argv);
  } catch (err) {
    // parseArgs' own errors (unknown option, missing value) are usage errors too.
    output.err(`slowlane jobs: ${messageOf(err)}\n\n${JOBS_USAGE}`);
    return 2;
  }
  if (parsed.invocation === "help") {
    // `slowlane jobs` alone is a usage error; `--help` is not.
    if (argv.some((a) => a === "-h" || a === "--help" || a === "help")) {
      output.out(JOBS_USAGE);
      return 0;
    }
    output.err(`slowlane jobs: a subcommand is needed\n\n${JOBS_USAGE}`);
    return 2;
  }

  const env = options.env ?? process.env;
  const file = parsed.configFile ?? env.SLOWLANE_CONFIG ?? options.defaultConfigFile;
  let config: Config;
  try {
    config = loadConfig(file, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    output.err(err.message);
    return 1;
  }

  let nc: NatsConnection | undefined;
  try {
    nc = await connectOnce(config, env);
    const context = await openJetStream(nc, config.nats.stream);
    return await execute(context, parsed.invocation, output);
  } catch (err) {
    output.err(`slowlane jobs: ${messageOf(err)}`);
    return 1;
  } finally {
    await nc?.close().catch(() => undefined);
  }
}
