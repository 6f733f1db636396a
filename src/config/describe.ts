/** The human-readable summary `slowlane check` prints: what the sidecar will do with this configuration. */
import { formatDuration } from "./duration.js";
import { formatSize } from "./size.js";
import type { Config, RouteConfig } from "./types.js";

/** `host:port`, with IPv6 hosts in brackets. */
function formatAddress({ host, port }: Config["listen"]): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function formatSettings(s: Config["defaults"]): string {
  return [
    `timeout ${formatDuration(s.timeoutMs)}`,
    `ttl ${formatDuration(s.ttlMs)}`,
    `attempts ${s.attempts}`,
    `concurrency ${s.concurrency}`,
    `retryAfter ${s.retryAfterS}s`,
    `backoff ${formatDuration(s.backoff.initialMs)}..${formatDuration(s.backoff.maxMs)} x${s.backoff.factor}${s.backoff.jitter ? " with jitter" : ""}`,
    `retryOn ${s.retryOn.length > 0 ? s.retryOn.join(",") : "none"}`,
    `maxBodySize ${formatSize(s.maxBodyBytes)}`,
    `maxResponseSize ${formatSize(s.maxResponseBytes)}`,
  ].join(", ");
}

/** Left-aligned columns separated by two spaces, no trailing blanks. */
function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) =>
    row
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd(),
  );
}

function routeRow(r: RouteConfig): string[] {
  return [
    r.name,
    r.methods?.join(",") ?? "*",
    r.path,
    formatDuration(r.timeoutMs),
    formatDuration(r.ttlMs),
    String(r.attempts),
    String(r.concurrency),
    `${r.retryAfterS}s`,
    r.retryOn.length > 0 ? r.retryOn.join(",") : "-",
    formatSize(r.maxBodyBytes),
  ];
}

/** Describes `config` over several lines, ending without a newline. */
export function describeConfig(config: Config): string {
  const extraRedacted = config.log.redactHeaders.length > 0 ? config.log.redactHeaders.join(", ") : "none";
  const lines = [
    `listen:    ${formatAddress(config.listen)}`,
    `upstream:  ${config.upstream}`,
    `nats:      ${config.nats.embedded ? `embedded nats-server, store ${config.nats.embedded.storeDir}` : config.nats.servers.join(", ")} (stream prefix ${config.nats.stream}, ackWait ${formatDuration(config.nats.ackWaitMs)}, replicas ${config.nats.replicas})`,
    `admin:     ${formatAddress(config.admin.listen)} (/healthz, /readyz, /metrics)`,
    `shutdown:  ${formatDuration(config.shutdownTimeoutMs)} to finish work in flight`,
    `jobs:      ${config.jobs.path}/<id>`,
    `log:       extra redacted headers: ${extraRedacted}`,
    `defaults:  ${formatSettings(config.defaults)}`,
    "",
  ];
  if (config.routes.length === 0) {
    lines.push("routes:    none (every request is passed through to the upstream)");
  } else {
    lines.push(`routes (${config.routes.length}, first match wins; other requests are passed through):`);
    const header = ["NAME", "METHODS", "PATH", "TIMEOUT", "TTL", "ATTEMPTS", "CONCURRENCY", "RETRY-AFTER", "RETRY-ON", "MAX-BODY"];
    lines.push(...table([header, ...config.routes.map(routeRow)]).map((l) => `  ${l}`));
  }
  return lines.join("\n");
}
