/**
 * A private nats-server that needs credentials or TLS, for tests of connecting to a production-like NATS.
 *
 * `startSecureNatsServer({ mode })` writes a server config (and certificates, seeds or creds) to a
 * temp dir, starts the server through the usual launcher (monitoring stays plain HTTP on its own
 * port, so the launcher's JetStream readiness check works unchanged) and returns the environment
 * variables a client needs, in the `nats` CLI's names that `toNatsAuthOptions` reads.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { nkeys } from "@nats-io/transport-node";
import { startNatsServer } from "./nats.js";
import type { NatsServer } from "./nats.js";

const run = promisify(execFile);

/** nkeys' key pair type, named through nats.js's re-export (`@nats-io/nkeys` is not a direct dependency). */
type KeyPair = ReturnType<typeof nkeys.createUser>;

/** How the server authenticates clients. `mtls` verifies a client certificate; `creds` runs in operator (JWT) mode. */
export type SecureMode = "password" | "token" | "tls" | "mtls" | "nkey" | "creds";

/** PEM files made by {@link createTestPki}. */
export interface TestPki {
  /** The private CA that signed the server and client certificates. */
  ca: string;
  /** Another self-signed CA, which did not sign anything here: for "untrusted certificate" tests. */
  otherCa: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** A running secure server and what a client needs to reach it. */
export interface SecureNatsServer {
  readonly server: NatsServer;
  readonly mode: SecureMode;
  /** `nats://127.0.0.1:PORT` (nats.js upgrades to TLS when the server requires it). */
  readonly url: string;
  /** `NATS_URL` plus the mode's variables: NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CA (+ NATS_CERT/NATS_KEY), NATS_NKEY or NATS_CREDS. */
  readonly env: Readonly<Record<string, string>>;
  /** Temp dir holding the server config and every key, certificate and creds file. */
  readonly dir: string;
  /** The PEM files, in the `tls` and `mtls` modes. */
  readonly pki: TestPki | undefined;
  /** Stops the server and removes `dir`. Idempotent. */
  close(): Promise<void>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run("openssl", args, { cwd });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT") throw new Error("openssl not found: install it (apt-get install -y openssl) to run TLS tests");
    throw new Error(`openssl ${args[0] ?? ""} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

/** An EC key and a certificate for `subject`, self-signed or signed by `ca`, with extensions from `extensions`. */
async function makeCert(dir: string, name: string, subject: string, ca: { cert: string; key: string } | undefined, extensions: string): Promise<void> {
  const ext = `${name}.ext`;
  await writeFile(join(dir, ext), `${extensions}\n`);
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}-key.pem`, "-subj", subject];
  if (ca === undefined) {
    await openssl(["req", "-x509", ...newKey, "-out", `${name}.pem`, "-days", "2", "-extensions", "v3_ca"], dir);
    return;
  }
  await openssl(["req", ...newKey, "-out", `${name}.csr`], dir);
  await openssl(
    ["x509", "-req", "-in", `${name}.csr`, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", ext],
    dir,
  );
}

/**
 * Makes a private CA, a server certificate for `localhost` and `127.0.0.1` (both SANs: nats.js checks
 * a `nats://127.0.0.1` server against the name it connects with), a client certificate, and an
 * unrelated CA, all with `openssl` in `dir`.
 */
export async function createTestPki(dir: string): Promise<TestPki> {
  const ca = { cert: "ca.pem", key: "ca-key.pem" };
  await makeCert(dir, "ca", "/CN=slowlane test CA", undefined, "");
  await makeCert(dir, "other-ca", "/CN=untrusted test CA", undefined, "");
  await makeCert(dir, "server", "/CN=localhost", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth");
  await makeCert(dir, "client", "/CN=slowlane", ca, "extendedKeyUsage=clientAuth");
  const at = (file: string): string => join(dir, file);
  return {
    ca: at("ca.pem"),
    otherCa: at("other-ca.pem"),
    serverCert: at("server.pem"),
    serverKey: at("server-key.pem"),
    clientCert: at("client.pem"),
    clientKey: at("client-key.pem"),
  };
}

function seedText(kp: KeyPair): string {
  return new TextDecoder().decode(kp.getSeed());
}

/** A JWT signed with an nkey, as `nsc` makes them (the server checks the signature and the issuer chain). */
function signJwt(signer: KeyPair, claims: Record<string, unknown>): string {
  const b64 = (data: string | Uint8Array): string => Buffer.from(data).toString("base64url");
  const header = b64(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const body = b64(JSON.stringify({ jti: randomBytes(16).toString("hex").toUpperCase(), iat: Math.floor(Date.now() / 1000), ...claims }));
  const signature = b64(signer.sign(new TextEncoder().encode(`${header}.${body}`)));
  return `${header}.${body}.${signature}`;
}

/**
 * Operator mode without `nsc`: an operator, a system account, an account with JetStream and a
 * user, preloaded into a MEMORY resolver. Returns the server config and the user's `.creds` text.
 */
export function createOperatorSetup(): { config: string; creds: string } {
  const operator = nkeys.createOperator();
  const system = nkeys.createAccount();
  const account = nkeys.createAccount();
  const user = nkeys.createUser();
  const op = operator.getPublicKey();
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  const operatorJwt = signJwt(operator, { iss: op, sub: op, name: "test-operator", nats: { type: "operator", version: 2, system_account: system.getPublicKey() } });
  const accountJwt = (kp: KeyPair, name: string, jetstream: boolean): string =>
    signJwt(operator, {
      iss: op,
      sub: kp.getPublicKey(),
      name,
      nats: { type: "account", version: 2, limits: jetstream ? { ...unlimited, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } : unlimited },
    });
  const userJwt = signJwt(account, {
    iss: account.getPublicKey(),
    sub: user.getPublicKey(),
    name: "slowlane",
    nats: { type: "user", version: 2, pub: {}, sub: {}, subs: -1, data: -1, payload: -1 },
  });
  const config = [
    `operator: ${operatorJwt}`,
    `system_account: ${system.getPublicKey()}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${system.getPublicKey()}: ${accountJwt(system, "SYS", false)}`,
    `  ${account.getPublicKey()}: ${accountJwt(account, "APP", true)}`,
    "}",
  ].join("\n");
  const creds = [
    "-----BEGIN NATS USER JWT-----",
    userJwt,
    "------END NATS USER JWT------",
    "",
    "************************* IMPORTANT *************************",
    "NKEY Seed printed below can be used to sign and prove identity.",
    "",
    "-----BEGIN USER NKEY SEED-----",
    seedText(user),
    "------END USER NKEY SEED------",
    "",
  ].join("\n");
  return { config, creds };
}

/** Writes the server config and client files for `mode`; returns the config and the client's variables (without NATS_URL). */
async function prepare(mode: SecureMode, dir: string): Promise<{ config: string; env: Record<string, string>; pki?: TestPki }> {
  const secret = randomBytes(18).toString("hex");
  switch (mode) {
    case "password":
      return { config: `authorization { users = [ { user: "slowlane", password: "${secret}" } ] }`, env: { NATS_USER: "slowlane", NATS_PASSWORD: secret } };
    case "token":
      return { config: `authorization { token: "${secret}" }`, env: { NATS_TOKEN: secret } };
    case "tls":
    case "mtls": {
      const pki = await createTestPki(dir);
      const verify = mode === "mtls" ? `, ca_file: "${pki.ca}", verify: true` : "";
      const env: Record<string, string> = mode === "mtls" ? { NATS_CA: pki.ca, NATS_CERT: pki.clientCert, NATS_KEY: pki.clientKey } : { NATS_CA: pki.ca };
      return { config: `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}"${verify} }`, env, pki };
    }
    case "nkey": {
      const user = nkeys.createUser();
      await writeFile(join(dir, "user.nk"), `${seedText(user)}\n`, { mode: 0o600 });
      return { config: `authorization { users = [ { nkey: ${user.getPublicKey()} } ] }`, env: { NATS_NKEY: join(dir, "user.nk") } };
    }
    case "creds": {
      const setup = createOperatorSetup();
      await writeFile(join(dir, "user.creds"), setup.creds, { mode: 0o600 });
      return { config: setup.config, env: { NATS_CREDS: join(dir, "user.creds") } };
    }
  }
}

/**
 * Starts a private nats-server with JetStream that requires `mode`'s credentials or TLS.
 *
 * @param opts.mode - how clients authenticate; see {@link SecureMode}.
 * @param opts.args - extra nats-server arguments, after `-c CONFIG`.
 * @returns the server, the client environment (`NATS_URL` and the mode's variables) and a `close()`.
 */
export async function startSecureNatsServer(opts: { mode: SecureMode; args?: string[] }): Promise<SecureNatsServer> {
  const dir = await mkdtemp(join(tmpdir(), `slowlane-nats-${opts.mode}-`));
  try {
    const { config, env, pki } = await prepare(opts.mode, dir);
    const configFile = join(dir, "nats-server.conf");
    await writeFile(configFile, `${config}\n`, { mode: 0o600 });
    const server = await startNatsServer({ args: ["-c", configFile, ...(opts.args ?? [])] });
    let closed: Promise<void> | undefined;
    return {
      server,
      mode: opts.mode,
      url: server.url,
      env: { NATS_URL: server.url, ...env },
      dir,
      pki,
      close: () => (closed ??= server.close().finally(() => rm(dir, { recursive: true, force: true }))),
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
