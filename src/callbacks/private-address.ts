/**
 * Which IP addresses a callback must not reach unless an operator names them: everything that is not
 * a public unicast address (loopback, private, link-local, CGNAT, cloud metadata, multicast, reserved).
 * IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that address,
 * so `::ffff:127.0.0.1` is as private as `127.0.0.1`.
 */
import { BlockList, isIPv4, isIPv6 } from "node:net";

/** RFC 6890 special-purpose IPv4 blocks that are not globally reachable, plus multicast and reserved. */
const IPV4_BLOCKS: readonly (readonly [string, number])[] = [
  ["0.0.0.0", 8], // "this network", 0.0.0.0 reaches the local host on Linux
  ["10.0.0.0", 8],
  ["100.64.0.0", 10], // CGNAT
  ["127.0.0.0", 8],
  ["169.254.0.0", 16], // link-local, including 169.254.169.254 (cloud metadata)
  ["172.16.0.0", 12],
  ["192.0.0.0", 24], // IETF protocol assignments (some clouds put metadata here)
  ["192.0.2.0", 24],
  ["192.88.99.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, and 255.255.255.255
];

const IPV6_BLOCKS: readonly (readonly [string, number])[] = [
  ["::", 96], // unspecified ::, loopback ::1 and the deprecated IPv4-compatible form
  ["64:ff9b:1::", 48], // local-use NAT64
  ["100::", 64], // discard
  ["2001::", 23], // IETF protocol assignments, Teredo
  ["2001:db8::", 32], // documentation
  ["fc00::", 7], // unique local
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated, still routed by some stacks)
  ["ff00::", 8], // multicast
];

const blocked = new BlockList();
for (const [net, prefix] of IPV4_BLOCKS) blocked.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of IPV6_BLOCKS) blocked.addSubnet(net, prefix, "ipv6");

/**
 * True when `ip` is not a public unicast address: loopback, private (RFC 1918, fc00::/7), link-local,
 * CGNAT, unspecified (0.0.0.0, ::), multicast, reserved, documentation, or an IPv6 address embedding one
 * of those IPv4 addresses. Also true for anything that is not an IP address at all, so a caller that
 * passes a host name by mistake refuses it rather than lets it through. Accepts `[v6]` and `%zone`.
 */
export function isPrivateAddress(ip: string): boolean {
  const address = ip.trim().replace(/^\[(.*)\]$/, "$1").replace(/%.*$/, "");
  if (isIPv4(address)) return blocked.check(address, "ipv4");
  if (!isIPv6(address)) return true;
  const embedded = toEmbeddedIpv4(address);
  if (embedded !== undefined && blocked.check(embedded, "ipv4")) return true;
  return blocked.check(address, "ipv6");
}

/** The IPv4 address an IPv6 address carries, for the forms that route to it; `undefined` otherwise. */
function toEmbeddedIpv4(ipv6: string): string | undefined {
  const h = toHextets(ipv6);
  const zeros = (from: number, to: number) => h.slice(from, to).every((x) => x === 0);
  const dotted = (hi: number, lo: number) => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  const [h0 = 0, h1 = 0, , , , h5 = 0, h6 = 0, h7 = 0] = h;
  if (zeros(0, 5) && h5 === 0xffff) return dotted(h6, h7); // ::ffff:a.b.c.d, mapped
  if (zeros(0, 4) && h[4] === 0xffff && h5 === 0) return dotted(h6, h7); // ::ffff:0:a.b.c.d, SIIT
  if (h0 === 0x64 && h1 === 0xff9b && zeros(2, 6)) return dotted(h6, h7); // 64:ff9b::a.b.c.d, NAT64
  if (h0 === 0x2002) return dotted(h1, h[2] ?? 0); // 2002:aabb:ccdd::, 6to4
  return undefined;
}

/** The eight 16-bit groups of a valid IPv6 address (the WHATWG URL parser writes it in one canonical form first). */
function toHextets(ipv6: string): number[] {
  const canonical = new URL(`http://[${ipv6}]/`).hostname.slice(1, -1);
  const [head = "", tail] = canonical.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const fill = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill("0");
  return [...left, ...fill, ...right].map((group) => Number.parseInt(group, 16));
}
