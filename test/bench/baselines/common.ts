/**
 * What the baseline scripts share: reading env settings, announcing readiness on stdout
 * (`LISTENING <port>` / `READY`) so the harness can wait for it, and exiting cleanly on SIGTERM.
 */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

export function env(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
}

/** Listens on 127.0.0.1:0 and prints `LISTENING <port>`. */
export function listen(server: Server, onClose: () => Promise<void> = async () => undefined): void {
  server.keepAliveTimeout = 65_000;
  server.listen(0, "127.0.0.1", () => {
    console.log(`LISTENING ${(server.address() as AddressInfo).port}`);
  });
  exitOnSignal(async () => {
    server.closeAllConnections();
    server.close();
    await onClose();
  });
}

export function exitOnSignal(cleanup: () => Promise<void>): void {
  const stop = () => {
    cleanup().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

/** The 1 KiB body every bare server answers with. */
export const BODY_1K = Buffer.from(JSON.stringify({ data: "x".repeat(1024 - 11) }));
