/**
 * Where a slowlane process finds NATS: the configured servers with their credentials and TLS
 * (`nats.auth`, `nats.tls`, the NATS_* environment), or, with `nats.servers: embedded`, a private
 * nats-server started here and stopped by `close()` (and by the kernel, should slowlane be killed).
 */
import type { Config } from "../config/index.js";
import type { Logger } from "../log.js";
import { toNatsAuthOptions } from "./credentials.js";
import type { NatsAuth } from "./credentials.js";
import { startEmbeddedNats } from "./embedded-server.js";
import type { EmbeddedNats } from "./embedded-server.js";

/** The variables that carry NATS credentials or TLS files, in the `nats` CLI's names. */
const CREDENTIAL_VARIABLES = ["NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY", "NATS_CA", "NATS_CERT", "NATS_KEY"];

export interface NatsEndpoint {
  /** The server URLs to connect to. */
  readonly servers: readonly string[];
  /** Credentials and TLS; `undefined` for the embedded server, which needs none. */
  readonly auth: NatsAuth | undefined;
  /** The embedded nats-server, when `nats.servers` is `embedded`. */
  readonly embedded: EmbeddedNats | undefined;
  /** Stops the embedded server, if any; call it after the NATS connection is closed. Idempotent. */
  close(): Promise<void>;
}

function hasCredentialSettings(config: Config, env: NodeJS.ProcessEnv): boolean {
  return config.nats.auth !== undefined || config.nats.tls !== undefined || CREDENTIAL_VARIABLES.some((name) => (env[name] ?? "") !== "");
}

async function startEmbedded(config: Config, storeDir: string, env: NodeJS.ProcessEnv, log: Logger): Promise<NatsEndpoint> {
  if (hasCredentialSettings(config, env)) {
    log.warn("nats.servers is embedded: the NATS credentials and TLS settings (nats.auth, nats.tls, NATS_USER...) are not used");
  }
  const embedded = await startEmbeddedNats({ storeDir, log, env });
  log.info(
    { url: embedded.url, storeDir: embedded.storeDir },
    "NATS: an embedded nats-server, for trying slowlane and for development; in production point nats.servers at a real NATS cluster (as the Kubernetes manifests in deploy/ do)",
  );
  return { servers: [embedded.url], auth: undefined, embedded, close: () => embedded.close() };
}

/**
 * Reads the credentials and TLS files (or starts the embedded server) before anything connects.
 *
 * @throws ConfigError when a credentials or TLS setting is unusable (an unreadable file, two methods
 *   at once); Error with the install command when `embedded` finds no nats-server binary.
 */
export async function openNatsEndpoint(config: Config, env: NodeJS.ProcessEnv, log: Logger): Promise<NatsEndpoint> {
  if (config.nats.embedded !== undefined) return startEmbedded(config, config.nats.embedded.storeDir, env, log);
  const auth = toNatsAuthOptions({ env, tls: config.nats.tls, auth: config.nats.auth });
  return { servers: config.nats.servers, auth, embedded: undefined, close: () => Promise.resolve() };
}
