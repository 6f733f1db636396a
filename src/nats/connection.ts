/**
 * The NATS connection, kept alive for the life of the process.
 *
 * nats.js reconnects by itself once a connection has been made, but its first `connect()` fails
 * if no server answers. slowlane must start anyway (passthrough keeps working, async routes answer
 * 503), so the first connect is retried here, with one clear log line instead of a crash. The same
 * holds for a server that refuses the credentials or whose certificate is not trusted: one line
 * saying what failed and where (`describeConnectError`, never a secret), then retries, so that a
 * password fixed on either side is picked up without a restart.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { messageOf } from "../errors.js";
import type { Logger } from "../log.js";
import { describeConnectError } from "./credentials.js";
import type { NatsAuth } from "./credentials.js";

export interface NatsClientOptions {
  servers: readonly string[];
  /** Connection name shown by the server's monitoring (`slowlane-proxy`, `slowlane-worker`). */
  name: string;
  log: Logger;
  /** Pause between first-connect attempts; default 2 s. */
  retryDelayMs?: number;
  /** Called after the first connect and after every reconnect, before `isConnected()` turns true. */
  onConnect?: (nc: NatsConnection) => Promise<void>;
  /** Credentials and TLS (`toNatsAuthOptions`); none when absent. */
  auth?: NatsAuth;
}

export interface NatsClient {
  /** The connection once made (it may be reconnecting: see `isConnected`). */
  readonly connection: NatsConnection | undefined;
  /** True while connected and set up; async routes answer 503 otherwise. */
  isConnected(): boolean;
  /** Resolves with the connection once the first connect and `onConnect` have succeeded. */
  readonly ready: Promise<NatsConnection>;
  close(): Promise<void>;
}

/**
 * Logs a connect failure: at error the first time and whenever the reason changes (a server that
 * was down now refuses the password), at debug while it stays the same, so a NATS that stays away
 * gives one line, not one per retry. The error object goes to debug: its text is in the line.
 */
function createFailureLog(log: Logger, auth: NatsAuth | undefined) {
  let last: string | undefined;
  const report = (line: string, servers: string, err: unknown): void => {
    if (line !== last) log.error({ servers }, line);
    log.debug({ err }, line);
    last = line;
  };
  return {
    failed(err: unknown, servers: readonly string[], suffix: string): void {
      report(`${describeConnectError(err, servers, auth)}${suffix}`, servers.join(", "), err);
    },
    setUpFailed(err: unknown, servers: string, suffix: string): void {
      const line = `connected to NATS at ${servers}, but JetStream could not be set up (${messageOf(err)}); is JetStream enabled (nats-server -js)?${suffix}`;
      report(line, servers, err);
    },
    reset(): void {
      last = undefined;
    },
  };
}

/** A connection that, once made, reconnects for as long as the process lives. */
function connectForever(servers: readonly string[], name: string, auth: NatsAuth | undefined): Promise<NatsConnection> {
  return connect({
    servers: [...servers],
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1_000,
    // nats.js gives up reconnecting after two authorization errors in a row; slowlane keeps
    // trying, so that credentials fixed on either side are picked up without a restart.
    ignoreAuthErrorAbort: true,
    // Otherwise every request builds an Error with a stack up front, for async traces: 10-17%
    // of the CPU of the accept, status and worker paths (profiled). Errors keep their message.
    noAsyncTraces: true,
    ...auth?.options,
  });
}

export function createNatsClient(options: NatsClientOptions): NatsClient {
  const { servers, name, log } = options;
  const retryDelayMs = options.retryDelayMs ?? 2_000;
  const where = servers.join(", ");
  const failures = createFailureLog(log, options.auth);
  const closing = new AbortController();
  let connection: NatsConnection | undefined;
  let connected = false;

  async function setUp(nc: NatsConnection): Promise<void> {
    await options.onConnect?.(nc);
    connected = true;
  }

  /**
   * After a reconnect the server may have lost or reset its state (a new pod without a volume), or
   * JetStream may still be recovering its streams: set up again until it works, staying "not
   * connected" (503) meanwhile rather than accepting into a stream that is not there.
   */
  async function setUpAgain(nc: NatsConnection): Promise<void> {
    for (let attempt = 1; !closing.signal.aborted && !nc.isClosed(); attempt++) {
      try {
        await setUp(nc);
        return;
      } catch (err) {
        if (attempt === 1) log.error({ err }, `setting up JetStream after reconnect failed; retrying every ${retryDelayMs / 1000}s`);
        await sleep(retryDelayMs, undefined, { signal: closing.signal }).catch(() => undefined);
      }
    }
  }

  async function watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        connected = false;
        failures.reset();
        log.warn({ server: s.server }, "NATS connection lost; async routes answer 503 until it is back");
      } else if (s.type === "reconnect") {
        log.info({ server: s.server }, "NATS connection restored");
        await setUpAgain(nc);
      } else if (s.type === "error" && !connected) {
        // A reconnect refused (a password changed on the server, a certificate no longer trusted).
        failures.failed(s.error, servers, "; retrying");
      } else if (s.type === "close" && !closing.signal.aborted) {
        connected = false;
        log.error({ servers: where }, "the NATS connection was closed and will not reconnect; restart slowlane");
      }
    }
  }

  async function firstConnect(): Promise<NatsConnection> {
    const retrying = `; retrying every ${retryDelayMs / 1000}s (async routes answer 503 meanwhile)`;
    for (let attempt = 1; !closing.signal.aborted; attempt++) {
      try {
        const nc = await connectForever(servers, name, options.auth);
        connection = nc;
        void watch(nc).catch((err: unknown) => log.error({ err }, "NATS status watcher stopped"));
        await setUp(nc);
        log.info({ servers: where, attempts: attempt, auth: options.auth?.describe ?? "no authentication" }, "connected to NATS");
        return nc;
      } catch (err) {
        if (connection) {
          // Connected but set-up failed (e.g. JetStream not enabled): close and try again.
          await connection.close().catch(() => undefined);
          connection = undefined;
          failures.setUpFailed(err, where, retrying);
        } else failures.failed(err, servers, retrying);
        await sleep(retryDelayMs, undefined, { signal: closing.signal }).catch(() => undefined);
      }
    }
    throw new Error("closed before NATS was reached");
  }

  const ready = firstConnect();
  // Callers that never await `ready` (e.g. a proxy closed before NATS came up) must not see an unhandled rejection.
  ready.catch(() => undefined);

  return {
    get connection() {
      return connection;
    },
    isConnected: () => connected && connection !== undefined && !connection.isClosed(),
    ready,
    async close() {
      closing.abort();
      connected = false;
      const nc = connection;
      connection = undefined;
      if (nc && !nc.isClosed()) await nc.drain().catch(() => nc.close());
    },
  };
}
