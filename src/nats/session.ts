/**
 * The NATS side of a slowlane process: one connection kept for its life, JetStream provisioned on
 * every (re)connect for the config in force, and a queue that runs set-up tasks one at a time.
 *
 * Provisioning, starting the forwarder and applying a reload each read the config in force and
 * change what JetStream holds: they run through {@link NatsSession.exclusive}, one at a time, so a
 * reconnect's set-up never undoes a reload's.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { Config } from "../config/index.js";
import type { Logger } from "../log.js";
import { createNatsClient } from "./connection.js";
import type { JetStreamContext } from "./context.js";
import type { NatsAuth } from "./credentials.js";
import { provision } from "./provision.js";

export interface NatsSessionOptions {
  /** The config in force; read at each set-up. */
  config: () => Config;
  /** Connection name shown by the server's monitoring. */
  name: string;
  /** Create and update the route consumers (workers). */
  consumers: boolean;
  log: Logger;
  /** Pause between attempts to reach NATS at start. */
  retryDelayMs?: number;
  /** Called (inside `exclusive`) after each set-up, with the config it was made for. */
  onSetUp?: (context: JetStreamContext, config: Config) => Promise<void>;
  /** The servers to connect to; default the config's `nats.servers` (an embedded server's URL replaces them). */
  servers?: readonly string[];
  /** Credentials and TLS for the connection. */
  auth?: NatsAuth;
}

export interface NatsSession {
  /** JetStream, while connected and set up; `undefined` otherwise (async routes answer 503). */
  context(): JetStreamContext | undefined;
  isConnected(): boolean;
  /** Resolves once NATS was reached and JetStream set up the first time. */
  readonly ready: Promise<void>;
  /** Runs `task` after every set-up task queued before it, and before any queued after. */
  exclusive<T>(task: () => Promise<T>): Promise<T>;
  /** Provisions `config` now if connected (a reload); else the next (re)connect will. */
  provision(config: Config): Promise<JetStreamContext | undefined>;
  close(): Promise<void>;
}

export function createNatsSession(options: NatsSessionOptions): NatsSession {
  let serial: Promise<unknown> = Promise.resolve();
  function exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = serial.then(task);
    serial = run.catch(() => undefined);
    return run;
  }

  let context: JetStreamContext | undefined;
  async function setUp(nc: NatsConnection, config: Config): Promise<JetStreamContext> {
    context = await provision(nc, config, { consumers: options.consumers });
    await options.onSetUp?.(context, config);
    return context;
  }

  const initial = options.config();
  const client = createNatsClient({
    servers: options.servers ?? initial.nats.servers,
    name: options.name,
    log: options.log,
    ...(options.auth === undefined ? {} : { auth: options.auth }),
    ...(options.retryDelayMs === undefined ? {} : { retryDelayMs: options.retryDelayMs }),
    onConnect: (nc) => exclusive(async () => void (await setUp(nc, options.config()))),
  });

  return {
    context: () => (client.isConnected() ? context : undefined),
    isConnected: () => client.isConnected(),
    ready: client.ready.then(() => undefined),
    exclusive,
    async provision(config) {
      const nc = client.connection;
      if (!nc || !client.isConnected()) return undefined;
      return setUp(nc, config);
    },
    close: () => client.close(),
  };
}
