import type { LookupAddress } from "node:dns";
import { describe, expect, it } from "vitest";
import {
  ADDRESS_REFUSED_CODE,
  CallbackPatternError,
  checkCallbackUrl,
  compileCallbackPolicy,
  isPrivateAddress,
  toConnectLookup,
} from "../../src/callbacks/url-policy.js";
import type { CallbackPolicy, LookupAll } from "../../src/callbacks/url-policy.js";

/** A resolver with fixed answers (no network in tests); `localhost` goes to the system's, as in production. */
const PUBLIC = "93.184.216.34";
const records: Record<string, LookupAddress[]> = {
  "hooks.example.com": [{ address: PUBLIC, family: 4 }],
  "a.example.com": [{ address: PUBLIC, family: 4 }],
  "rebind.example.com": [{ address: "169.254.169.254", family: 4 }],
  "mixed.example.com": [
    { address: PUBLIC, family: 4 },
    { address: "fd00::1", family: 6 },
  ],
  "v6.example.com": [{ address: "::ffff:127.0.0.1", family: 6 }],
};
const fakeLookupAll: LookupAll = async (host) => {
  const found = records[host];
  if (found) return found;
  const { lookup } = await import("node:dns/promises");
  if (host === "localhost") return lookup(host, { all: true });
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
};

const ALLOW = [
  "https://hooks.example.com/**",
  "https://*.example.com/cb/*",
  "http://10.0.0.5:*/**",
  "http://[::1]:8080/hook",
  "http://localhost/**",
  "http://127.0.0.1.nip.io/**",
  "http://*:9000/**",
  "https://rebind.example.com/**",
  "https://mixed.example.com/**",
  "https://v6.example.com/**",
];
const policy = compileCallbackPolicy(ALLOW, { lookupAll: fakeLookupAll });

async function reasonFor(p: CallbackPolicy, url: string): Promise<string | undefined> {
  const result = await checkCallbackUrl(p, url);
  return result.ok ? undefined : result.reason;
}

describe("callback URL patterns", () => {
  it.each([
    "https://hooks.example.com/",
    "https://hooks.example.com/a/b/c?token=1",
    "https://HOOKS.example.com:443/x",
    "https://a.example.com/cb/done",
    "http://10.0.0.5:8080/any/path",
    "http://10.0.0.5/",
    "http://[::1]:8080/hook",
  ])("allows %s", async (url) => {
    expect(await reasonFor(policy, url)).toBeUndefined();
  });

  it.each([
    ["https://hooks.example.com:8443/", "matches none"],
    ["http://hooks.example.com/", "matches none"],
    ["https://a.b.example.com/cb/done", "matches none"], // * is one label
    ["https://example.com/cb/done", "matches none"],
    ["https://a.example.com/cb/", "matches none"], // * is one non-empty segment
    ["https://a.example.com/cb/x/y", "matches none"],
    ["https://a.example.com/cb/../../admin", "matches none"], // the URL parser resolves .. first
    ["http://10.0.0.6:8080/", "matches none"],
    ["http://[::1]:8080/other", "matches none"],
  ])("refuses %s (%s)", async (url, why) => {
    expect(await reasonFor(policy, url)).toContain(why);
  });

  it("keeps the query and drops the fragment", async () => {
    const result = await checkCallbackUrl(policy, "https://hooks.example.com/x?job=1#frag");
    expect(result.ok && result.url.href).toBe("https://hooks.example.com/x?job=1");
  });

  it.each([
    ["https://user:pw@hooks.example.com/", "credentials"],
    ["https://user@hooks.example.com/", "credentials"],
    ["ftp://hooks.example.com/", "http or https"],
    ["file:///etc/passwd", "http or https"],
    ["/relative", "not a valid absolute URL"],
    ["https://%2A.example.com/cb/x", "not a DNS name"],
    [`https://hooks.example.com/${"a".repeat(3000)}`, "longer than"],
  ])("refuses %s before matching (%s)", async (url, why) => {
    expect(await reasonFor(policy, url)).toContain(why);
  });
});

describe("callback URLs and private addresses", () => {
  it("refuses a name that resolves to loopback even when a pattern names the host (localhost)", async () => {
    const reason = await reasonFor(policy, "http://localhost/");
    expect(reason).toContain("localhost resolves to a loopback");
    expect(reason).not.toContain("127.0.0.1");
  });

  it("refuses a nip.io-style name that resolves to loopback", async () => {
    const p = compileCallbackPolicy(["http://127.0.0.1.nip.io/**"], { lookupAll: async () => [{ address: "127.0.0.1", family: 4 }] });
    expect(await reasonFor(p, "http://127.0.0.1.nip.io/")).toContain("resolves to a loopback");
  });

  it.each([
    ["https://rebind.example.com/", "resolves to"], // metadata address
    ["https://mixed.example.com/", "resolves to"], // one private record is enough
    ["https://v6.example.com/", "resolves to"], // IPv4-mapped loopback
    ["http://unknown:9000/", "could not be resolved"],
  ])("refuses %s (%s)", async (url, why) => {
    expect(await reasonFor(policy, url)).toContain(why);
  });

  it.each([
    "http://127.0.0.1:9000/",
    "http://0x7f000001:9000/", // the URL parser makes it 127.0.0.1
    "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:127.0.0.1]:9000/",
    "http://[::1]:9000/",
    "http://[::]:9000/",
    "http://0.0.0.0:9000/",
  ])("refuses the literal address in %s unless a pattern names it", async (url) => {
    const wide = compileCallbackPolicy(["http://*:9000/**", "http://*.*.*.*:*/**", "http://[::ffff:7f00:1]:8080/**"], { lookupAll: fakeLookupAll });
    const reason = await reasonFor(wide, url);
    // Either no pattern matches it at all, or it matches only by wildcard, which never allows a private address.
    expect(reason).toMatch(/matches none|loopback, private or link-local/);
  });

  it("allows a private address a pattern names literally, and only with that pattern's port and path", async () => {
    const p = compileCallbackPolicy(["http://169.254.169.254/hook", "http://[::ffff:127.0.0.1]:8080/**"], { lookupAll: fakeLookupAll });
    expect(await reasonFor(p, "http://169.254.169.254/hook")).toBeUndefined();
    expect(await reasonFor(p, "http://169.254.169.254/latest")).toContain("matches none");
    expect(await reasonFor(p, "http://[::ffff:127.0.0.1]:8080/x")).toBeUndefined();
    expect(await reasonFor(p, "http://127.0.0.1:8080/x")).toContain("matches none");
  });

  it("gives up on a resolver that does not answer in time", async () => {
    const p = compileCallbackPolicy(["https://slow.example.com/**"], { lookupAll: () => new Promise(() => {}), lookupTimeoutMs: 20 });
    expect(await reasonFor(p, "https://slow.example.com/")).toContain("could not be resolved in time");
  });
});

describe("compileCallbackPolicy", () => {
  it("reports every invalid pattern at once, by index", () => {
    const bad = [
      "https://ok.example.com/**",
      "ftp://x.example.com/",
      "https://a*.example.com/",
      "https://x.example.com/**/tail",
      "https://x.example.com/cb-*",
      "https://u@x.example.com/",
      "https://x.example.com:99999/",
      "https://x.example.com/?q=1",
      "hooks.example.com/**",
      "https://**.example.com/",
      "https://[::*]/",
    ];
    let caught: unknown;
    try {
      compileCallbackPolicy(bad);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(CallbackPatternError);
    const problems = (caught as CallbackPatternError).problems;
    expect(problems.map((p) => p.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(problems[0]?.message).toContain("use http or https");
    expect(problems[1]?.message).toContain("one whole label");
    expect(problems[2]?.message).toContain("last path segment");
    expect((caught as Error).message).toContain('allow[6]: "https://x.example.com:99999/"');
  });

  it("refuses an empty list", () => {
    expect(() => compileCallbackPolicy([])).toThrow(/at least one/);
  });

  it("returns a frozen policy", () => {
    expect(Object.isFrozen(policy)).toBe(true);
    expect(Object.isFrozen(policy.patterns[0])).toBe(true);
  });
});

describe("isPrivateAddress", () => {
  it.each([
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
    "100.127.255.255", "169.254.169.254", "169.254.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255",
    "::", "::1", "[::1]", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::127.0.0.1",
    "2002:7f00:1::", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "ff02::1", "2001:db8::1",
    "localhost", "not an address",
  ])("%s is private", (ip) => {
    expect(isPrivateAddress(ip)).toBe(true);
  });

  it.each(["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8"])(
    "%s is public",
    (ip) => {
      expect(isPrivateAddress(ip)).toBe(false);
    },
  );
});

describe("toConnectLookup (checked again when connecting)", () => {
  const lookupWith = (p: CallbackPolicy | undefined, host: string, all: boolean) =>
    new Promise<{ err: NodeJS.ErrnoException | null; address: string | LookupAddress[] }>((resolve) => {
      toConnectLookup(p)(host, { all }, (err, address) => resolve({ err, address }));
    });

  it("refuses a name that now resolves to a private address (DNS rebinding)", async () => {
    const { err } = await lookupWith(policy, "rebind.example.com", true);
    expect(err?.code).toBe(ADDRESS_REFUSED_CODE);
    expect(err?.message).not.toContain("169.254");
  });

  it("refuses localhost with the system resolver", async () => {
    const { err } = await lookupWith(undefined, "localhost", false);
    expect(err?.code).toBe(ADDRESS_REFUSED_CODE);
  });

  it("answers in both of dns.lookup's shapes for a public name", async () => {
    expect((await lookupWith(policy, "hooks.example.com", true)).address).toEqual([{ address: PUBLIC, family: 4 }]);
    expect((await lookupWith(policy, "hooks.example.com", false)).address).toBe(PUBLIC);
  });

  it("lets a literal address through only when public or named by a pattern", async () => {
    expect((await lookupWith(policy, "10.0.0.5", false)).err).toBeNull();
    expect((await lookupWith(policy, "10.0.0.6", false)).err?.code).toBe(ADDRESS_REFUSED_CODE);
    expect((await lookupWith(policy, "8.8.8.8", false)).err).toBeNull();
  });
});
