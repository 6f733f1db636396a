/**
 * The NATS connection, kept alive for the life of the process.
 *
 * nats.js reconnects by itself once a connection has been made, but its first `connect()` fails
 * if no server answers. slowlane must start anyway (passthrough keeps working, async routes answer
 * 503), so the first connect is retried here, with one clear log line instead of a crash.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { messageOf } from "../errors.js";
import type { Logger } from "../log.js";

export interface NatsClientOptions {
  servers: readonly string[];
  /** Connection name shown by the server's monitoring (`slowlane-proxy`, `slowlane-worker`). */
  name: string;
  log: Logger;
  /** Pause between first-connect attempts; default 2 s. */
  retryDelayMs?: number;
  /** Called after the first connect and after every reconnect, before `isConnected()` turns true. */
  onConnect?: (nc: NatsConnection) => Promise<void>;
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

/** The one log line for a NATS that cannot be reached at start. */
function unreachableLine(where: string, err: unknown, retryDelayMs: number): string {
  return `cannot reach NATS JetStream at ${where} (${messageOf(err)}); is a nats-server with JetStream running? (start one with: nats-server -js) — retrying every ${retryDelayMs / 1000}s`;
}

export function createNatsClient(options: NatsClientOptions): NatsClient {
  const { servers, name, log } = options;
  const retryDelayMs = options.retryDelayMs ?? 2_000;
  const where = servers.join(", ");
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
        log.warn({ server: s.server }, "NATS connection lost; async routes answer 503 until it is back");
      } else if (s.type === "reconnect") {
        log.info({ server: s.server }, "NATS connection restored");
        await setUpAgain(nc);
      }
    }
  }

  async function firstConnect(): Promise<NatsConnection> {
    let failures = 0;
    while (!closing.signal.aborted) {
      try {
        const nc = await connect({
          servers: [...servers],
          name,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 1_000,
          // Otherwise every request builds an Error with a stack up front, for async traces: 10-17%
          // of the CPU of the accept, status and worker paths (profiled). Errors keep their message.
          noAsyncTraces: true,
        });
        connection = nc;
        void watch(nc).catch((err: unknown) => log.error({ err }, "NATS status watcher stopped"));
        await setUp(nc);
        log.info({ servers: where, attempts: failures + 1 }, "connected to NATS");
        return nc;
      } catch (err) {
        if (connection) {
          // Connected but set-up failed (e.g. JetStream not enabled): close and try again.
          await connection.close().catch(() => undefined);
          connection = undefined;
        }
        failures += 1;
        const line = unreachableLine(where, err, retryDelayMs);
        if (failures === 1) log.error({ err }, line);
        else log.debug({ attempt: failures }, line);
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
