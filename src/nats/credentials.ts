/**
 * Credentials and TLS for a production NATS, following the `nats` CLI's conventions.
 *
 * Secrets come from the environment (`NATS_PASSWORD`, `NATS_TOKEN`) or from files whose paths are in
 * the environment (`NATS_CREDS`, `NATS_NKEY`, `NATS_CA`, `NATS_CERT`, `NATS_KEY`) or in the YAML
 * (`nats.auth.*File`, `nats.tls.*`): the YAML never holds a secret itself. The environment wins
 * over the YAML. Every problem is reported at once as a {@link ConfigError} naming the key and the
 * file, never its content; {@link NatsAuth.describe} is safe to log.
 */
import { readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { createSecureContext } from "node:tls";
import {
  credsAuthenticator,
  nkeyAuthenticator,
  nkeys,
  tokenAuthenticator,
  usernamePasswordAuthenticator,
} from "@nats-io/transport-node";
import type { Authenticator, NodeConnectionOptions } from "@nats-io/transport-node";
import { ConfigError } from "../errors.js";
import type { ConfigProblem } from "../errors.js";

/**
 * Far above any real creds, seed or PEM bundle (a system CA bundle is ~200 KiB): a wrong path
 * (a log file) is refused instead of being read whole.
 */
const MAX_FILE_BYTES = 1024 * 1024;

function fileError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code });
}

/**
 * Reads a regular file of at most {@link MAX_FILE_BYTES}. Devices and pipes are refused: the file is
 * read again on every reconnect, and a pipe read twice would block the process.
 */
function readFileBounded(path: string): Buffer {
  const stat = statSync(path);
  if (stat.isDirectory()) throw fileError("EISDIR");
  if (!stat.isFile()) throw fileError("ENOTREGULAR");
  if (stat.size > MAX_FILE_BYTES) throw fileError("EFBIG");
  return readFileSync(path);
}

const READ_ERRORS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "it is a directory",
  ENOTREGULAR: "not a regular file",
  EFBIG: `larger than ${MAX_FILE_BYTES / 1024 / 1024} MiB, not a credentials or PEM file`,
};

function toReadProblem(key: string, path: string, err: unknown): ConfigProblem {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  return { path: key, message: `cannot read ${path}: ${READ_ERRORS[code] ?? (code || String(err))}` };
}

/** TLS file paths (the YAML `nats.tls` section). Each is overridden by `NATS_CA`, `NATS_CERT`, `NATS_KEY`. */
export interface NatsTlsFiles {
  /** PEM file of the CA that signed the server's certificate; default: the system's CAs. */
  ca?: string;
  /** PEM client certificate, for servers that verify clients (`verify: true`); needs `key`. */
  cert?: string;
  /** PEM private key of `cert` (unencrypted). */
  key?: string;
}

/** Authentication settings (the YAML `nats.auth` section): file paths and the user name, never a secret. */
export interface NatsAuthFiles {
  /** A `.creds` file (user JWT and nkey seed), as `nsc` writes it. Overridden by `NATS_CREDS`. */
  credsFile?: string;
  /** A file holding a user nkey seed (`SU...`). Overridden by `NATS_NKEY`. */
  nkeyFile?: string;
  /** User name for user/password authentication. Overridden by `NATS_USER`. */
  user?: string;
  /** A file holding the password of `user`. Overridden by `NATS_PASSWORD` (the password itself). */
  passwordFile?: string;
  /** A file holding an authentication token. Overridden by `NATS_TOKEN` (the token itself). */
  tokenFile?: string;
}

/** Input of {@link toNatsAuthOptions}. */
export interface NatsAuthInput {
  /** Usually `process.env`; see the module comment for the variables read. */
  env: NodeJS.ProcessEnv;
  tls?: NatsTlsFiles;
  auth?: NatsAuthFiles;
}

/** The authentication methods; exactly one (or none) is in force. */
export const NatsAuthMethods = {
  NONE: "none",
  PASSWORD: "password",
  TOKEN: "token",
  CREDS: "creds",
  NKEY: "nkey",
} as const;

export type NatsAuthMethod = (typeof NatsAuthMethods)[keyof typeof NatsAuthMethods];

/** Connect options for nats.js and a summary of them for the start-up log. */
export interface NatsAuth {
  /** Spread into `connect({ servers, ...options })`. */
  options: Pick<NodeConnectionOptions, "authenticator" | "tls">;
  method: NatsAuthMethod;
  /** The authentication part of `describe`, e.g. `user alice (password from NATS_PASSWORD)` or `no authentication`. */
  authSummary: string;
  /** The TLS part of `describe`, e.g. `TLS with CA /etc/nats/ca.pem`; `undefined` without TLS settings. */
  tlsSummary: string | undefined;
  /** One secret-free line, e.g. `user alice (password from NATS_PASSWORD), TLS with CA /etc/nats/ca.pem`. */
  describe: string;
}

/** One setting, from the environment (`key` is the variable) or the YAML (`key` is its path). */
interface Setting {
  key: string;
  value: string;
  fromEnv: boolean;
}

/** A method's settings, as named by one layer (the environment or the YAML). */
interface Candidate {
  method: Exclude<NatsAuthMethod, "none">;
  keys: string[];
}

interface Built {
  authenticator: Authenticator;
  describe: string;
}

function pick(env: NodeJS.ProcessEnv, envName: string, yaml: string | undefined, yamlKey: string): Setting | undefined {
  // An empty variable counts as unset: `NATS_TOKEN=` in a manifest is an absent secret, not an empty one.
  const fromEnv = env[envName];
  if (fromEnv !== undefined && fromEnv !== "") return { key: envName, value: fromEnv, fromEnv: true };
  if (yaml !== undefined && yaml !== "") return { key: yamlKey, value: yaml, fromEnv: false };
  return undefined;
}

type LayerKeys = Record<"user" | "password" | "token" | "creds" | "nkey", string>;

const ENV_KEYS: LayerKeys = { user: "NATS_USER", password: "NATS_PASSWORD", token: "NATS_TOKEN", creds: "NATS_CREDS", nkey: "NATS_NKEY" };
const YAML_KEYS: LayerKeys = {
  user: "nats.auth.user",
  password: "nats.auth.passwordFile",
  token: "nats.auth.tokenFile",
  creds: "nats.auth.credsFile",
  nkey: "nats.auth.nkeyFile",
};

/** The methods one layer names; `values` holds that layer's settings under the same names as `keys`. */
function toCandidates(values: Partial<Record<keyof LayerKeys, string>>, keys: LayerKeys): Candidate[] {
  const isSet = (name: keyof LayerKeys): boolean => values[name] !== undefined && values[name] !== "";
  const found: Candidate[] = [];
  const password = (["user", "password"] as const).filter(isSet).map((name) => keys[name]);
  if (password.length > 0) found.push({ method: "password", keys: password });
  for (const method of ["token", "creds", "nkey"] as const) {
    if (isSet(method)) found.push({ method, keys: [keys[method]] });
  }
  return found;
}

/**
 * Reads `path` again on every (re)connect, so a secret rotated in place (a Kubernetes secret volume)
 * is picked up without a restart; a read or decode failure keeps the last good value, since a
 * half-written file during rotation must not break the reconnect.
 */
function rereading<T>(path: string, decode: (bytes: Buffer) => T, initial: T): () => T {
  let last = initial;
  return () => {
    try {
      last = decode(readFileBounded(path));
    } catch {
      // Keep `last`; the server will say whether it is still accepted.
    }
    return last;
  };
}

/** Reads a secret file at start-up; problems name the key and the path, never the content. */
function readSecret<T>(setting: Setting, decode: (bytes: Buffer) => T, problems: ConfigProblem[]): { path: string; value: T } | undefined {
  const path = resolve(setting.value);
  let bytes: Buffer;
  try {
    bytes = readFileBounded(path);
  } catch (err) {
    problems.push(toReadProblem(setting.key, path, err));
    return undefined;
  }
  try {
    return { path, value: decode(bytes) };
  } catch (err) {
    problems.push({ path: setting.key, message: `${path}: ${(err as Error).message}` });
    return undefined;
  }
}

function decodeText(bytes: Buffer): string {
  // Secret files usually end with a newline that is not part of the secret.
  const text = bytes.toString("utf8").trim();
  if (text === "") throw new Error("the file is empty");
  return text;
}

/** Finds the user seed in a seed file, bare or decorated (`-----BEGIN USER NKEY SEED-----`), as the nats CLI does. */
function decodeSeed(bytes: Buffer): Uint8Array {
  const match = /^\s*(SU[A-Z2-7]+)\s*$/m.exec(bytes.toString("utf8"));
  const seed = match?.[1];
  if (seed === undefined) throw new Error("no user nkey seed in the file (expected a line starting with SU)");
  const encoded = new TextEncoder().encode(seed);
  try {
    nkeys.fromSeed(encoded);
  } catch {
    throw new Error("the user nkey seed in the file is not valid");
  }
  return encoded;
}

/** Parses a creds file with nats.js's own parser (signing a dummy nonce checks the seed too). */
function decodeCreds(bytes: Buffer): Uint8Array {
  const creds = new Uint8Array(bytes);
  try {
    credsAuthenticator(creds)("check");
  } catch {
    throw new Error("not a NATS credentials file (expected a user JWT block and a user nkey seed block)");
  }
  return creds;
}

function buildPassword(input: NatsAuthInput, problems: ConfigProblem[]): Built | undefined {
  const { env, auth = {} } = input;
  const user = pick(env, ENV_KEYS.user, auth.user, YAML_KEYS.user);
  const password = pick(env, ENV_KEYS.password, auth.passwordFile, YAML_KEYS.password);
  if (user === undefined) {
    problems.push({ path: password?.key ?? ENV_KEYS.password, message: "a password needs a user name: set NATS_USER or nats.auth.user" });
    return undefined;
  }
  if (password === undefined) {
    problems.push({ path: user.key, message: `user ${user.value} has no password: set NATS_PASSWORD or nats.auth.passwordFile` });
    return undefined;
  }
  if (password.fromEnv) {
    return {
      authenticator: usernamePasswordAuthenticator(user.value, password.value),
      describe: `user ${user.value} (password from ${password.key})`,
    };
  }
  const read = readSecret(password, decodeText, problems);
  if (read === undefined) return undefined;
  return {
    authenticator: usernamePasswordAuthenticator(user.value, rereading(read.path, decodeText, read.value)),
    describe: `user ${user.value} (password from ${password.key} ${read.path})`,
  };
}

function buildToken(input: NatsAuthInput, problems: ConfigProblem[]): Built | undefined {
  const token = pick(input.env, ENV_KEYS.token, input.auth?.tokenFile, YAML_KEYS.token);
  if (token === undefined) return undefined;
  if (token.fromEnv) return { authenticator: tokenAuthenticator(token.value), describe: `token from ${token.key}` };
  const read = readSecret(token, decodeText, problems);
  if (read === undefined) return undefined;
  return {
    authenticator: tokenAuthenticator(rereading(read.path, decodeText, read.value)),
    describe: `token from ${token.key} ${read.path}`,
  };
}

function buildCreds(input: NatsAuthInput, problems: ConfigProblem[]): Built | undefined {
  const creds = pick(input.env, ENV_KEYS.creds, input.auth?.credsFile, YAML_KEYS.creds);
  if (creds === undefined) return undefined;
  const read = readSecret(creds, decodeCreds, problems);
  if (read === undefined) return undefined;
  return {
    authenticator: credsAuthenticator(rereading(read.path, decodeCreds, read.value)),
    describe: `credentials file ${read.path} (${creds.key})`,
  };
}

function buildNkey(input: NatsAuthInput, problems: ConfigProblem[]): Built | undefined {
  const nkey = pick(input.env, ENV_KEYS.nkey, input.auth?.nkeyFile, YAML_KEYS.nkey);
  if (nkey === undefined) return undefined;
  const read = readSecret(nkey, decodeSeed, problems);
  if (read === undefined) return undefined;
  // The public key is not a secret, and it is what the server's config lists: worth logging.
  const publicKey = nkeys.fromSeed(read.value).getPublicKey();
  return {
    authenticator: nkeyAuthenticator(rereading(read.path, decodeSeed, read.value)),
    describe: `nkey ${publicKey} (seed file ${read.path} from ${nkey.key})`,
  };
}

const BUILDERS = { password: buildPassword, token: buildToken, creds: buildCreds, nkey: buildNkey } as const;

/** The methods in force: the environment's if it names any (it wins over the YAML), else the YAML's. */
function toActiveMethods(input: NatsAuthInput): { active: Candidate[]; overridden: Candidate[] } {
  const { env, auth = {} } = input;
  const fromEnv = toCandidates(
    { user: env.NATS_USER, password: env.NATS_PASSWORD, token: env.NATS_TOKEN, creds: env.NATS_CREDS, nkey: env.NATS_NKEY },
    ENV_KEYS,
  );
  const fromYaml = toCandidates(
    { user: auth.user, password: auth.passwordFile, token: auth.tokenFile, creds: auth.credsFile, nkey: auth.nkeyFile },
    YAML_KEYS,
  );
  if (fromEnv.length === 0) return { active: fromYaml, overridden: [] };
  // A YAML user name completes NATS_PASSWORD, so it is not "overridden".
  const overridden = fromYaml.filter((c) => !fromEnv.some((e) => e.method === c.method));
  return { active: fromEnv, overridden };
}

function toPem(bytes: Buffer): Buffer {
  if (!bytes.includes("-----BEGIN")) throw new Error("not a PEM file (no -----BEGIN line)");
  return bytes;
}

/** Lets OpenSSL check the files now (a CA that does not parse, a key that does not match) rather than on the first connect. */
function checkSecureContext(key: string, files: string, options: Parameters<typeof createSecureContext>[0], problems: ConfigProblem[]): void {
  try {
    createSecureContext(options);
  } catch (err) {
    // OpenSSL's messages ("key values mismatch") name no content.
    problems.push({ path: key, message: `${files}: ${(err as Error).message}` });
  }
}

function buildTls(input: NatsAuthInput, problems: ConfigProblem[]): { tls: NodeConnectionOptions["tls"]; describe: string } | undefined {
  const { env, tls = {} } = input;
  const ca = pick(env, "NATS_CA", tls.ca, "nats.tls.ca");
  const cert = pick(env, "NATS_CERT", tls.cert, "nats.tls.cert");
  const key = pick(env, "NATS_KEY", tls.key, "nats.tls.key");
  if (ca === undefined && cert === undefined && key === undefined) return undefined;
  const lone = cert === undefined ? key : key === undefined ? cert : undefined;
  if (lone !== undefined) {
    problems.push({ path: lone.key, message: "a client certificate and its key go together: set both NATS_CERT and NATS_KEY (or nats.tls.cert and nats.tls.key)" });
  }
  const caRead = ca && readSecret(ca, toPem, problems);
  const certRead = cert && readSecret(cert, toPem, problems);
  const keyRead = key && readSecret(key, toPem, problems);
  if (ca && caRead) checkSecureContext(ca.key, caRead.path, { ca: caRead.value }, problems);
  if (cert && certRead && key && keyRead) {
    const files = `${certRead.path} and ${keyRead.path}`;
    checkSecureContext(`${cert.key}, ${key.key}`, files, { cert: certRead.value, key: keyRead.value }, problems);
  }
  // Paths, not contents: nats.js reads the files on every connect, so renewed certificates (cert-manager) are picked up.
  const options: NonNullable<NodeConnectionOptions["tls"]> = {};
  if (caRead) options.caFile = caRead.path;
  if (certRead) options.certFile = certRead.path;
  if (keyRead) options.keyFile = keyRead.path;
  const parts = [caRead ? `TLS with CA ${caRead.path}` : "TLS with the system CAs"];
  if (certRead) parts.push(`client certificate ${certRead.path}`);
  return { tls: options, describe: parts.join(" and ") };
}

/**
 * Turns the environment and the YAML `nats.tls` / `nats.auth` sections into nats.js connect options.
 *
 * Exactly one of user/password, token, credentials file or nkey may be in force. Settings in the
 * environment win over the YAML, key by key (`NATS_PASSWORD` over `nats.auth.passwordFile`) and
 * method by method (`NATS_TOKEN` set: the YAML's `credsFile` is ignored, and `describe` says
 * `token from NATS_TOKEN instead of nats.auth.credsFile`).
 * Relative paths are resolved against the working directory. Secret files are read now (to fail
 * at start-up) and again on every reconnect (to follow rotation).
 *
 * @throws ConfigError listing every problem: conflicting methods, a half-set pair, an unreadable or
 *   malformed file (named with its key, never with its content).
 */
export function toNatsAuthOptions(input: NatsAuthInput): NatsAuth {
  const problems: ConfigProblem[] = [];
  const { active, overridden } = toActiveMethods(input);
  if (active.length > 1) {
    const keys = active.flatMap((c) => c.keys);
    problems.push({
      path: keys.join(", "),
      message: `${active.map((c) => c.method).join(", ")} are all set, but only one NATS authentication method may be in force (user and password, token, credentials file or nkey)`,
    });
  }
  const built = active.map((c) => BUILDERS[c.method](input, problems));
  const tls = buildTls(input, problems);
  if (problems.length > 0) throw new ConfigError(undefined, problems);

  const chosen = built[0];
  const method = active[0]?.method ?? NatsAuthMethods.NONE;
  const authSummary = chosen?.describe ?? "no authentication";
  const override = overridden.length > 0 ? ` instead of ${overridden.flatMap((c) => c.keys).join(", ")}` : "";
  const options: NatsAuth["options"] = {};
  if (chosen) options.authenticator = chosen.authenticator;
  if (tls) options.tls = tls.tls;
  const describe = `${authSummary}${override}${tls ? `, ${tls.describe}` : ""}`;
  return { options, method, authSummary, tlsSummary: tls?.describe, describe };
}

/** What a connect error's chain (`err`, `err.cause`, ...) says: messages in lower case, Node error codes, the address tried. */
interface ErrorFacts {
  text: string;
  codes: Set<string>;
  address: string | undefined;
  first: string;
}

function toErrorFacts(err: unknown): ErrorFacts {
  const messages: string[] = [];
  const codes = new Set<string>();
  let address: string | undefined;
  let current: unknown = err;
  for (let depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    const e = current as { message?: unknown; code?: unknown; address?: unknown; port?: unknown; cause?: unknown };
    messages.push(typeof e.message === "string" ? e.message : String(current));
    if (typeof e.code === "string") codes.add(e.code);
    if (address === undefined && typeof e.address === "string") address = e.port === undefined ? e.address : `${e.address}:${String(e.port)}`;
    current = e.cause;
  }
  return { text: messages.join(" | ").toLowerCase(), codes, address, first: messages[0] ?? "unknown error" };
}

/** Node's codes for a server certificate that does not chain up to a trusted CA. */
const UNTRUSTED_CERT_CODES = [
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_UNTRUSTED",
];

const AUTH_HINT = "NATS_USER and NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY (or nats.auth in the config)";

/**
 * A server that verifies client certificates answers a missing or unacceptable one with a TLS alert,
 * a reset or (after a TLS 1.3 handshake) silence, depending on timing: each case gives this hint.
 */
function clientCertHint(auth: NatsAuth | undefined): string {
  const certFile = auth?.options.tls?.certFile;
  return certFile
    ? `the server may have rejected the TLS client certificate ${certFile} (see its log)`
    : "the server may require a TLS client certificate (set NATS_CERT and NATS_KEY)";
}

/** The reason part of {@link describeConnectError}'s line. */
function toReason(facts: ErrorFacts, auth: NatsAuth | undefined): string {
  const { text, codes } = facts;
  const has = (...list: string[]): boolean => list.some((c) => codes.has(c));
  if (text.includes("user authentication expired") || text.includes("account authentication expired")) {
    return `the credentials have expired (${facts.first}); renew them`;
  }
  if (text.includes("authorization violation") || text.includes("authentication timeout")) {
    if (auth?.method === NatsAuthMethods.NONE) return `authorization violation: the server requires authentication and none is set; set ${AUTH_HINT}`;
    const tried = `the server rejected ${auth ? auth.authSummary : "the credentials"}`;
    return `authorization violation: ${tried}; check ${AUTH_HINT}`;
  }
  if (has(...UNTRUSTED_CERT_CODES)) {
    return `the server's TLS certificate is not trusted (${facts.first}); set NATS_CA (or nats.tls.ca) to the CA certificate that signed it`;
  }
  if (has("ERR_TLS_CERT_ALTNAME_INVALID")) return `the server's TLS certificate does not name this host (${facts.first}); connect with a host name the certificate lists`;
  if (has("CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID")) return `the server's TLS certificate is not valid now (${facts.first})`;
  const alert = [...codes].find((c) => c.startsWith("ERR_SSL_") && c.includes("ALERT") && c.includes("CERTIFICATE"));
  if (alert !== undefined) {
    const certFile = auth?.options.tls?.certFile;
    return certFile
      ? `the server rejected the TLS client certificate ${certFile} (${alert}); it must be signed by a CA the server trusts, for client authentication`
      : `the server requires a TLS client certificate (${alert}); set NATS_CERT and NATS_KEY (or nats.tls.cert and nats.tls.key)`;
  }
  if (text.includes("server does not support 'tls'")) {
    return "TLS is configured (NATS_CA, NATS_CERT, NATS_KEY or nats.tls) but the server does not offer it; enable TLS on the server or remove those settings";
  }
  if (text.includes("tls required") || text.includes("tls is required")) return "the server requires TLS; set NATS_CA (or nats.tls.ca) if its certificate is from a private CA";
  if (has("ECONNREFUSED") || text.includes("connection refused")) {
    return `connection refused${facts.address ? ` by ${facts.address}` : ""}: no nats-server listens there (start one with: nats-server -js)`;
  }
  if (has("ENOTFOUND", "EAI_AGAIN")) return `cannot resolve the host name (${facts.first})`;
  if (has("ECONNRESET", "EPIPE") || text.includes("handshake")) {
    return `the server closed the connection during the handshake (${facts.first}); ${clientCertHint(auth)}`;
  }
  if (text.includes("timeout")) {
    // A server that rejects a client certificate after a TLS 1.3 handshake often shows up as silence.
    return `no answer within the connect timeout: a firewall or a wrong port, or ${clientCertHint(auth)}`;
  }
  return facts.first;
}

/**
 * One line for the log saying what failed when connecting to NATS and where: wrong credentials
 * (authorization violation), an untrusted or mismatched certificate, TLS required or not offered,
 * connection refused, an unknown host, a timeout. Never includes a secret.
 *
 * @param err - what nats.js `connect()` threw (or a status error after a reconnect).
 * @param servers - the server URLs tried.
 * @param auth - the settings used, to say which credentials were rejected (optional).
 */
export function describeConnectError(err: unknown, servers: string | readonly string[], auth?: NatsAuth): string {
  const list = typeof servers === "string" ? [servers] : servers;
  const facts = toErrorFacts(err);
  const where = list.length > 0 ? list.join(", ") : "(no servers)";
  const line = `cannot connect to NATS at ${where}: ${toReason(facts, auth)}`;
  return line.replace(/\s*\n\s*/g, " ");
}
