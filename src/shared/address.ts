import type { AddressInfo } from "node:net";
import type { Server } from "node:net";

/** `http://host:port` of a listening server (IPv6 hosts in brackets). */
export function toHttpUrl(server: Pick<Server, "address">): string {
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}
