import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, nkeys } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/errors.js";
import { describeConnectError, toNatsAuthOptions } from "../../src/nats/credentials.js";
import type { NatsAuthInput } from "../../src/nats/credentials.js";
import { getFreePort } from "../helpers/nats.js";
import { createOperatorSetup, createTestPki, startSecureNatsServer } from "../helpers/nats-secure.js";
import type { SecureMode, SecureNatsServer, TestPki } from "../helpers/nats-secure.js";

const MODES: readonly SecureMode[] = ["password", "token", "tls", "mtls", "nkey", "creds"];
const servers = new Map<SecureMode, SecureNatsServer>();
let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "slowlane-creds-test-"));
  const started = await Promise.all(MODES.map((mode) => startSecureNatsServer({ mode })));
  for (const s of started) servers.set(s.mode, s);
});

afterAll(async () => {
  await Promise.all([...servers.values()].map((s) => s.close()));
  await rm(scratch, { recursive: true, force: true });
});

function secure(mode: SecureMode): SecureNatsServer {
  const s = servers.get(mode);
  if (s === undefined) throw new Error(`no ${mode} server`);
  return s;
}

/** Connects like slowlane will, with a short timeout so a failing case does not wait 20 s. */
async function connectWith(url: string, input: NatsAuthInput, timeoutMs = 5_000): Promise<NatsConnection> {
  return connect({ servers: url, timeout: timeoutMs, reconnect: false, ...toNatsAuthOptions(input).options });
}

/** What `describeConnectError` says about a connect that must fail. */
async function failure(url: string, input: NatsAuthInput, timeoutMs?: number): Promise<string> {
  try {
    const nc = await connectWith(url, input, timeoutMs);
    await nc.close();
  } catch (err) {
    return describeConnectError(err, [url], toNatsAuthOptions(input));
  }
  throw new Error("connect succeeded but was expected to fail");
}

/** A JetStream round trip: account info, a stream, a published message acknowledged by the server. */
async function roundTrip(nc: NatsConnection, name: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.getAccountInfo();
  expect(info.limits).toBeDefined();
  await jsm.streams.add({ name, subjects: [`${name}.>`] });
  const ack = await jetstream(nc).publish(`${name}.x`, "hello");
  expect(ack.stream).toBe(name);
  expect(ack.seq).toBe(1);
}

async function scratchFile(name: string, content: string): Promise<string> {
  const path = join(scratch, name);
  await writeFile(path, content, { mode: 0o600 });
  return path;
}

describe("connecting with credentials from the environment", () => {
  it.each(MODES)("%s: connects and does a JetStream round trip", async (mode) => {
    const s = secure(mode);
    const nc = await connectWith(s.url, { env: s.env });
    try {
      await roundTrip(nc, `CREDS_${mode.toUpperCase()}`);
    } finally {
      await nc.close();
    }
  });

  it("describes each method in one line without secrets", () => {
    const password = secure("password").env;
    expect(toNatsAuthOptions({ env: password }).describe).toBe("user slowlane (password from NATS_PASSWORD)");
    const token = secure("token").env;
    expect(toNatsAuthOptions({ env: token }).describe).toBe("token from NATS_TOKEN");
    const pki = secure("mtls").pki as TestPki;
    expect(toNatsAuthOptions({ env: secure("mtls").env }).describe).toBe(`no authentication, TLS with CA ${pki.ca} and client certificate ${pki.clientCert}`);
    expect(toNatsAuthOptions({ env: secure("creds").env }).describe).toMatch(/^credentials file \/.*user\.creds \(NATS_CREDS\)$/);
    expect(toNatsAuthOptions({ env: secure("nkey").env }).describe).toMatch(/^nkey U[A-Z2-7]{55} \(seed file \/.*user\.nk from NATS_NKEY\)$/);
    for (const env of [password, token]) {
      const secret = env.NATS_PASSWORD ?? env.NATS_TOKEN ?? "";
      expect(JSON.stringify(toNatsAuthOptions({ env }))).not.toContain(secret);
    }
  });

  it("reads the password and token from files named in the YAML, user from the YAML", async () => {
    const p = secure("password");
    const passwordFile = await scratchFile("password", `${p.env.NATS_PASSWORD}\n`);
    const nc = await connectWith(p.url, { env: {}, auth: { user: "slowlane", passwordFile } });
    await roundTrip(nc, "CREDS_PASSWORD_FILE");
    await nc.close();

    const t = secure("token");
    const tokenFile = await scratchFile("token", `${t.env.NATS_TOKEN}\n`);
    const auth = toNatsAuthOptions({ env: {}, auth: { tokenFile } });
    expect(auth.describe).toBe(`token from nats.auth.tokenFile ${tokenFile}`);
    const nt = await connect({ servers: t.url, ...auth.options });
    await roundTrip(nt, "CREDS_TOKEN_FILE");
    await nt.close();
  });

  it("takes TLS files from the YAML, and the environment wins over them", async () => {
    const s = secure("tls");
    const pki = s.pki as TestPki;
    const nc = await connectWith(s.url, { env: {}, tls: { ca: pki.ca } });
    await nc.close();
    const message = await failure(s.url, { env: { NATS_CA: pki.otherCa }, tls: { ca: pki.ca } });
    expect(message).toContain("not trusted");
  });

  it("picks up a password file rewritten in place on the next connect", async () => {
    const p = secure("password");
    const passwordFile = await scratchFile("rotating-password", "wrong-at-first\n");
    const auth = toNatsAuthOptions({ env: {}, auth: { user: "slowlane", passwordFile } });
    await expect(connect({ servers: p.url, reconnect: false, ...auth.options })).rejects.toThrow(/authorization violation/i);
    await writeFile(passwordFile, `${p.env.NATS_PASSWORD}\n`);
    const nc = await connect({ servers: p.url, ...auth.options });
    await nc.close();
  });
});

describe("describeConnectError", () => {
  it("wrong password: authorization violation, naming the user but not the password", async () => {
    const s = secure("password");
    const message = await failure(s.url, { env: { NATS_USER: "slowlane", NATS_PASSWORD: "not-the-password" } });
    expect(message).toBe(
      `cannot connect to NATS at ${s.url}: authorization violation: the server rejected user slowlane (password from NATS_PASSWORD); ` +
        "check NATS_USER and NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY (or nats.auth in the config)",
    );
    expect(message).not.toContain("not-the-password");
  });

  it("no credentials at all: says none are set", async () => {
    const message = await failure(secure("token").url, { env: {} });
    expect(message).toContain("the server requires authentication and none is set");
  });

  it("wrong token, wrong nkey, creds of another operator: authorization violation", async () => {
    expect(await failure(secure("token").url, { env: { NATS_TOKEN: "nope" } })).toContain("authorization violation: the server rejected token from NATS_TOKEN");
    const seed = await scratchFile("other.nk", `${new TextDecoder().decode(nkeys.createUser().getSeed())}\n`);
    expect(await failure(secure("nkey").url, { env: { NATS_NKEY: seed } })).toContain("authorization violation");
    const creds = await scratchFile("other.creds", createOperatorSetup().creds);
    expect(await failure(secure("creds").url, { env: { NATS_CREDS: creds } })).toContain("authorization violation");
  });

  it("untrusted certificate: a CA that did not sign it, or the system CAs", async () => {
    const s = secure("tls");
    const pki = s.pki as TestPki;
    const other = await failure(s.url, { env: { NATS_CA: pki.otherCa } });
    expect(other).toMatch(new RegExp(`^cannot connect to NATS at ${s.url}: the server's TLS certificate is not trusted \\(.+\\); set NATS_CA`));
    expect(await failure(s.url, { env: {} })).toContain("the server's TLS certificate is not trusted");
  });

  it("TLS configured but the server does not offer it", async () => {
    const s = secure("password");
    const message = await failure(s.url, { env: { ...s.env, NATS_CA: (secure("tls").pki as TestPki).ca } });
    expect(message).toContain("TLS is configured (NATS_CA, NATS_CERT, NATS_KEY or nats.tls) but the server does not offer it");
  });

  it("a server that requires a client certificate, without one: hints at NATS_CERT and NATS_KEY", async () => {
    const s = secure("mtls");
    const message = await failure(s.url, { env: { NATS_CA: (s.pki as TestPki).ca } }, 1_500);
    expect(message).toContain(`cannot connect to NATS at ${s.url}`);
    expect(message).toMatch(/the server (requires|may require) a TLS client certificate.*set NATS_CERT and NATS_KEY/);
  });

  it("a client certificate the server does not accept (not for client authentication)", async () => {
    const s = secure("mtls");
    const pki = s.pki as TestPki;
    const message = await failure(s.url, { env: { NATS_CA: pki.ca, NATS_CERT: pki.serverCert, NATS_KEY: pki.serverKey } }, 1_500);
    // Seen either as a TLS alert or, after a TLS 1.3 handshake, as silence until the connect timeout.
    expect(message).toMatch(/rejected the TLS client certificate \/.*\/server\.pem/);
  });

  it("connection refused: names the address", async () => {
    const port = await getFreePort();
    const url = `nats://127.0.0.1:${port}`;
    const message = await failure(url, { env: {} });
    expect(message).toBe(
      `cannot connect to NATS at ${url}: connection refused by 127.0.0.1:${port}: no nats-server listens there (start one with: nats-server -js)`,
    );
  });

  it("describes errors that are not Errors, in one line", () => {
    expect(describeConnectError("boom\nagain", "nats://x:4222")).toBe("cannot connect to NATS at nats://x:4222: boom again");
  });
});

/** The ConfigError `toNatsAuthOptions` throws for `input`. */
function configError(input: NatsAuthInput): ConfigError {
  try {
    toNatsAuthOptions(input);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("toNatsAuthOptions: settings that cannot work", () => {
  it("a file that cannot be read names the key and the file", () => {
    const missing = join(tmpdir(), "slowlane-no-such-dir", "token");
    const err = configError({ env: {}, auth: { tokenFile: missing } });
    expect(err.problems).toEqual([{ path: "nats.auth.tokenFile", message: `cannot read ${missing}: no such file` }]);
    const fromEnv = configError({ env: { NATS_CREDS: missing } });
    expect(fromEnv.problems).toEqual([{ path: "NATS_CREDS", message: `cannot read ${missing}: no such file` }]);
    expect(configError({ env: { NATS_NKEY: tmpdir() } }).problems[0]?.message).toBe(`cannot read ${tmpdir()}: it is a directory`);
    expect(configError({ env: { NATS_CA: "/dev/null" } }).problems[0]?.message).toBe("cannot read /dev/null: not a regular file");
  });

  it("a malformed secret file is reported without its content", async () => {
    const creds = await scratchFile("bad.creds", "SUPERSECRETVALUE not a creds file\n");
    const seed = await scratchFile("bad.nk", "SUPERSECRETVALUE\n");
    const empty = await scratchFile("empty-token", "\n");
    const err = configError({ env: { NATS_CREDS: creds }, auth: { nkeyFile: seed } });
    expect(err.problems).toEqual([
      { path: "NATS_CREDS", message: `${creds}: not a NATS credentials file (expected a user JWT block and a user nkey seed block)` },
    ]);
    const seedErr = configError({ env: {}, auth: { nkeyFile: seed } });
    expect(seedErr.message).toContain("nats.auth.nkeyFile");
    expect(seedErr.message).toContain("the user nkey seed in the file is not valid");
    expect(`${err.message} ${seedErr.message}`).not.toContain("SUPERSECRETVALUE");
    expect(configError({ env: {}, auth: { tokenFile: empty } }).problems[0]?.message).toBe(`${empty}: the file is empty`);
  });

  it("conflicting methods are an error; every problem is reported at once", () => {
    const err = configError({ env: { NATS_TOKEN: "t", NATS_CREDS: "/nonexistent/x.creds", NATS_CERT: "/nonexistent/c.pem" } });
    expect(err.problems.map((p) => p.path)).toEqual(["NATS_TOKEN, NATS_CREDS", "NATS_CREDS", "NATS_CERT", "NATS_CERT"]);
    expect(err.problems[0]?.message).toBe(
      "token, creds are all set, but only one NATS authentication method may be in force (user and password, token, credentials file or nkey)",
    );
    const yaml = configError({ env: {}, auth: { user: "alice", passwordFile: "/p", tokenFile: "/t" } });
    expect(yaml.problems[0]?.path).toBe("nats.auth.user, nats.auth.passwordFile, nats.auth.tokenFile");
  });

  it("the environment wins over the YAML, key by key and method by method", async () => {
    const tokenFile = await scratchFile("yaml-token", "from-yaml\n");
    const auth = toNatsAuthOptions({ env: { NATS_USER: "bob", NATS_PASSWORD: "pw" }, auth: { user: "alice", tokenFile } });
    expect(auth.method).toBe("password");
    expect(auth.describe).toBe("user bob (password from NATS_PASSWORD) instead of nats.auth.tokenFile");
    const completed = toNatsAuthOptions({ env: { NATS_PASSWORD: "pw" }, auth: { user: "alice" } });
    expect(completed.describe).toBe("user alice (password from NATS_PASSWORD)");
    const empty = toNatsAuthOptions({ env: { NATS_TOKEN: "", NATS_CA: "" }, auth: { tokenFile } });
    expect(empty.describe).toBe(`token from nats.auth.tokenFile ${tokenFile}`);
  });

  it("half a pair is an error: a user without a password, a certificate without its key", () => {
    expect(configError({ env: { NATS_USER: "alice" } }).problems).toEqual([
      { path: "NATS_USER", message: "user alice has no password: set NATS_PASSWORD or nats.auth.passwordFile" },
    ]);
    expect(configError({ env: {}, auth: { passwordFile: "/p" } }).problems[0]?.path).toBe("nats.auth.passwordFile");
    const pki = secure("mtls").pki as TestPki;
    expect(configError({ env: {}, tls: { key: pki.clientKey } }).problems[0]?.message).toContain("set both NATS_CERT and NATS_KEY");
  });

  it("TLS files are checked now: not PEM, a key that does not match its certificate", async () => {
    const pki = secure("mtls").pki as TestPki;
    const notPem = await scratchFile("not-pem", "hello\n");
    expect(configError({ env: { NATS_CA: notPem } }).problems).toEqual([{ path: "NATS_CA", message: `${notPem}: not a PEM file (no -----BEGIN line)` }]);
    const mismatch = configError({ env: { NATS_CERT: pki.clientCert, NATS_KEY: pki.serverKey } });
    expect(mismatch.problems[0]?.path).toBe("NATS_CERT, NATS_KEY");
    expect(mismatch.problems[0]?.message).toMatch(/^\/.*client\.pem and \/.*server-key\.pem: .*key values mismatch/);
  });

  it("accepts a decorated seed file and an absent configuration", async () => {
    const user = nkeys.createUser();
    const decorated = `-----BEGIN USER NKEY SEED-----\n${new TextDecoder().decode(user.getSeed())}\n------END USER NKEY SEED------\n`;
    const seed = await scratchFile("decorated.nk", decorated);
    expect(toNatsAuthOptions({ env: { NATS_NKEY: seed } }).describe).toContain(user.getPublicKey());
    expect(toNatsAuthOptions({ env: {} })).toEqual({ options: {}, method: "none", authSummary: "no authentication", tlsSummary: undefined, describe: "no authentication" });
  });
});

describe("createTestPki", () => {
  it("makes a server certificate for both localhost and 127.0.0.1", async () => {
    const dir = await mkdtemp(join(scratch, "pki-"));
    const pki = await createTestPki(dir);
    const cert = new X509Certificate(await readFile(pki.serverCert));
    expect(cert.subjectAltName).toContain("DNS:localhost");
    expect(cert.subjectAltName).toContain("IP Address:127.0.0.1");
  });
});
