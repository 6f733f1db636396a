#!/usr/bin/env node
/**
 * The command line: argv → run | proxy | worker | check | schema | keygen | jobs. The only file that calls process.exit.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Roles, startSlowlane } from "./app.js";
import type { Role } from "./app.js";
import { configJsonSchema, describeConfig, loadConfig } from "./config/index.js";
import type { Config } from "./config/index.js";
import { ConfigError, UsageError, messageOf } from "./errors.js";
import { createLogger } from "./log.js";
import { toJetStreamNames } from "./nats/names.js";
import { runJobsCommand } from "./ops/jobs-command.js";
import { describeStorage, keyFileOf, loadKeyFileSecrets } from "./security/key-source.js";
import type { ServerKeys } from "./security/server-keys.js";
import { generateKeyLine } from "./security/server-keys.js";
import { startTracing } from "./tracing/index.js";

const USAGE = `usage: slowlane <command> [--config FILE]

commands:
  run      proxy and forwarder workers in one process
  proxy    the HTTP side only
  worker   the forwarder only; run as many as you like
  check    validate the config and key file, say whether storage is encrypted, print the resolved routes (exit 1 on error)
  schema   print the config file's JSON Schema (for editors)
  keygen   print a new server key line (for the key file: slowlane keygen >> keys)
  jobs     list, show and retry jobs: slowlane jobs --help (exit 1 on error, 2 on bad usage)

options:
  -c, --config FILE   config file (default: $SLOWLANE_CONFIG or config/slowlane.yaml)
  -h, --help          this text
  -v, --version       the version

environment:
  SLOWLANE_CONFIG     config file, when --config is not given
  NATS_URL            overrides nats.servers (comma-separated; \`embedded\` included)
  SLOWLANE_KEY_FILE   server key file (overrides security.keyFile); encrypts what is stored
  NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY
                      NATS credentials (a value, or a file for CREDS and NKEY); win over nats.auth
  NATS_CA, NATS_CERT, NATS_KEY
                      TLS files for NATS; win over nats.tls
  NATS_SERVER_BIN     the nats-server binary for nats.servers: embedded (default: from PATH)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...
                      OpenTelemetry tracing (OTLP/HTTP); off unless an endpoint is set
  LOG_LEVEL           pino level: trace, debug, info (default), warn, error, fatal
`;

const DEFAULT_CONFIG_FILE = "config/slowlane.yaml";

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

/** `read()`, or exit 1 with every problem when it throws a ConfigError (a bad config or key file). */
function orExitOnConfigError<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
}

function readConfig(file: string): Config {
  return orExitOnConfigError(() => loadConfig(file));
}

/** The key file's keys for `check`; a bad file is reported like a bad config (exit 1). */
function readKeys(file: string): ServerKeys {
  return orExitOnConfigError(() => loadKeyFileSecrets(file).keys);
}

function check(file: string): void {
  const config = readConfig(file);
  const keyFile = keyFileOf(config);
  const keys = keyFile === undefined ? undefined : readKeys(keyFile);
  console.log(`${file}: OK\n`);
  console.log(describeStorage(keyFile, keys, toJetStreamNames(config.nats.stream).keysBucket));
  console.log(describeConfig(config));
}

async function serve(role: Role, file: string): Promise<void> {
  const config = readConfig(file);
  const log = createLogger({ level: process.env.LOG_LEVEL ?? "info", redactHeaders: config.log.redactHeaders });
  process.on("uncaughtException", (err) => {
    log.fatal({ err }, "uncaught exception; exiting");
    process.exit(1);
  });
  process.on("unhandledRejection", (err) => {
    log.fatal({ err }, "unhandled rejection; exiting");
    process.exit(1);
  });
  log.info({ role, config: file, version: version() }, "starting slowlane");
  let app: Awaited<ReturnType<typeof startSlowlane>>;
  try {
    // Off (and no SDK loaded) unless OTEL_EXPORTER_OTLP_ENDPOINT is set; app.close() flushes it last.
    const tracing = await startTracing(process.env, log);
    app = await startSlowlane({ config, role, log, configFile: file, tracing });
  } catch (err) {
    // A port in use, an unreadable credentials file, no nats-server for `embedded`: an operational
    // error (exit 1), not a usage error, said in one line.
    log.fatal({ err }, `could not start: ${messageOf(err)}`);
    process.exit(1);
  }

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, "stopping: no new requests, finishing the ones in flight");
    app.close().then(
      () => {
        log.info("stopped");
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, "error while stopping");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("SIGHUP", () => {
    log.info({ signal: "SIGHUP", config: file }, "reloading the config");
    app.reload().catch((err: unknown) => log.error({ err }, "config reload failed"));
  });
}

/** `jobs` has options of its own: when it is the command, the rest of argv (without it) is its to parse. */
function withoutJobsCommand(argv: string[]): string[] | undefined {
  const { tokens } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: false,
    tokens: true,
    options: { config: { type: "string", short: "c" } },
  });
  const command = tokens.find((t) => t.kind === "positional");
  return command?.value === "jobs" ? argv.filter((_, i) => i !== command.index) : undefined;
}

async function main(argv: string[]): Promise<void> {
  const jobsArgv = withoutJobsCommand(argv);
  if (jobsArgv) {
    process.exitCode = await runJobsCommand(jobsArgv, {
      defaultConfigFile: DEFAULT_CONFIG_FILE,
      output: { out: (text) => console.log(text), err: (text) => console.error(text) },
    });
    return;
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "v" },
    },
  });
  if (values.version) {
    console.log(version());
    return;
  }
  const [command, ...extra] = positionals;
  if (values.help || command === undefined || command === "help") {
    console.log(USAGE);
    if (command === undefined && !values.help) process.exitCode = 1;
    return;
  }
  if (extra.length > 0) throw new UsageError(`unexpected argument: ${extra.join(" ")}`);
  const file = values.config ?? process.env.SLOWLANE_CONFIG ?? DEFAULT_CONFIG_FILE;
  if (command === "check") {
    check(file);
    return;
  }
  if (command === "keygen") {
    console.log(generateKeyLine());
    return;
  }
  if (command === "schema") {
    console.log(JSON.stringify(configJsonSchema(), null, 2));
    return;
  }
  if ((Roles as readonly string[]).includes(command)) {
    await serve(command as Role, file);
    return;
  }
  throw new UsageError(`unknown command "${command}"`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`slowlane: ${messageOf(err)}\n\n${USAGE}`);
  process.exit(2);
});
