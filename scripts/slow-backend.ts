/**
 * An example "legacy backend" for the demo: some routes are slow on purpose, the rest answer at once.
 *
 * - `POST /reports/:name?delay=MS` waits `delay` ms (default 5000, at most 10 minutes), then
 *   answers 201 `{ report, bytes, tookMs }` where `bytes` is the request body's length.
 * - `GET /exports/:id` waits 2 s, then answers a CSV file.
 * - `GET /health` answers 200 `ok` at once.
 * - Anything else answers 200 `{ path, method }` at once (what slowlane passes through).
 *
 * Run directly: `node dist/dev/slow-backend.js [port]` (default 3000).
 */
import { realpathSync } from "node:fs";
import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { fileURLToPath } from "node:url";

const DEFAULT_REPORT_DELAY_MS = 5_000;
const MAX_REPORT_DELAY_MS = 10 * 60_000;
const EXPORT_DELAY_MS = 2_000;
const DEFAULT_PORT = 3000;

const REPORT_PATH = /^\/reports\/([^/]+)$/;
const EXPORT_PATH = /^\/exports\/([^/]+)$/;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(payload) });
  res.end(payload);
}

function sendText(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** Runs `fn` after `ms`, unless the client goes away first (so no timer outlives its request). */
function after(res: ServerResponse, ms: number, fn: () => void): void {
  if (res.socket === null || res.socket.destroyed) return;
  const timer = setTimeout(fn, ms);
  res.once("close", () => clearTimeout(timer));
}

/** Reads `?delay=`: a whole number of milliseconds, capped at 10 minutes; `undefined` when malformed. */
function parseDelayMs(raw: string | null): number | undefined {
  if (raw === null || raw === "") return DEFAULT_REPORT_DELAY_MS;
  if (!/^\d+$/.test(raw)) return undefined;
  return Math.min(Number(raw), MAX_REPORT_DELAY_MS);
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function exportCsv(id: string): string {
  const rows = ["id,line,amount"];
  for (let line = 1; line <= 5; line++) rows.push(`${JSON.stringify(id)},${line},${(line * 12.5).toFixed(2)}`);
  return `${rows.join("\n")}\n`;
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const startedAt = Date.now();
  const url = new URL(req.url ?? "/", "http://backend.invalid");
  const method = req.method ?? "GET";

  const report = method === "POST" ? REPORT_PATH.exec(url.pathname) : null;
  if (report?.[1] !== undefined) {
    const name = decodeSegment(report[1]);
    const delayMs = parseDelayMs(url.searchParams.get("delay"));
    if (delayMs === undefined) {
      req.resume();
      sendJson(res, 400, { error: "delay must be a whole number of milliseconds" });
      return;
    }
    let bytes = 0;
    req.on("data", (chunk: Buffer) => (bytes += chunk.length));
    req.on("end", () => {
      after(res, delayMs, () => sendJson(res, 201, { report: name, bytes, tookMs: Date.now() - startedAt }));
    });
    return;
  }

  // Bodies of other requests are not needed, but must be drained for keep-alive.
  req.resume();

  const exported = method === "GET" ? EXPORT_PATH.exec(url.pathname) : null;
  if (exported?.[1] !== undefined) {
    const id = decodeSegment(exported[1]);
    after(res, EXPORT_DELAY_MS, () => {
      res.setHeader("content-disposition", `attachment; filename="export-${id.replace(/[^\w.-]/g, "_")}.csv"`);
      sendText(res, 200, "text/csv; charset=utf-8", exportCsv(id));
    });
    return;
  }

  if (method === "GET" && url.pathname === "/health") {
    sendText(res, 200, "text/plain; charset=utf-8", "ok");
    return;
  }

  sendJson(res, 200, { path: url.pathname, method });
}

/**
 * Creates the demo's slow backend. It does not listen: call `listen()` on the result.
 * To shut down promptly while slow requests are pending, call `close()` then `closeAllConnections()`.
 *
 * @returns a plain `node:http` server.
 */
export function createSlowBackend(): Server {
  return createServer(handle);
}

function isRunDirectly(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isRunDirectly()) {
  const port = Number(process.argv[2] ?? DEFAULT_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    console.error(`usage: slow-backend [port]  (got ${JSON.stringify(process.argv[2])})`);
    process.exitCode = 2;
  } else {
    const server = createSlowBackend();
    server.listen(port, "127.0.0.1", () => {
      const address = server.address();
      const actual = typeof address === "object" && address !== null ? address.port : port;
      console.log(`slow backend listening on http://127.0.0.1:${actual}`);
    });
  }
}
