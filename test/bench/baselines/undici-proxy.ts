/**
 * A bare reverse proxy on undici, in front of UPSTREAM: a plain Node http server forwarding each
 * request with an undici `Pool`, the body piped both ways with backpressure, no checks, no
 * X-Forwarded-*, only the header filtering undici insists on. It uses `pool.dispatch` with a
 * minimal handler, undici's cheapest interface and the one slowlane's passthrough uses, so the
 * ratio measures slowlane's own work (checks, header rules, routing, metrics), not an API choice.
 */
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Pool } from "undici";
import type { Dispatcher } from "undici";
import { env, listen } from "./common.js";

const pool = new Pool(env("UPSTREAM"), { pipelining: 1, headersTimeout: 0, bodyTimeout: 0 });

/** Headers undici refuses to send, or that describe one connection only. */
const DROP = new Set(["connection", "keep-alive", "transfer-encoding", "expect", "upgrade"]);

function requestHeaders(req: IncomingMessage): string[] {
  const out: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (!DROP.has(name.toLowerCase())) out.push(name, raw[i + 1] as string);
  }
  return out;
}

class Relay implements Dispatcher.DispatchHandler {
  #resume: (() => void) | undefined;
  constructor(private readonly res: ServerResponse) {}
  onConnect(): void {}
  onHeaders(statusCode: number, raw: Buffer[], resume: () => void): boolean {
    const headers: string[] = [];
    for (let i = 0; i < raw.length; i += 2) {
      const name = (raw[i] as Buffer).toString("latin1");
      if (!DROP.has(name.toLowerCase())) headers.push(name, (raw[i + 1] as Buffer).toString("latin1"));
    }
    this.res.writeHead(statusCode, headers);
    this.#resume = resume;
    return true;
  }
  onData(chunk: Buffer): boolean {
    const flowing = this.res.write(chunk);
    if (!flowing) this.res.once("drain", this.#resume as () => void);
    return flowing;
  }
  onComplete(): void {
    this.res.end();
  }
  onError(): void {
    if (this.res.headersSent) return void this.res.destroy();
    this.res.writeHead(502);
    this.res.end();
  }
}

const server = createServer((req, res) => {
  const hasBody = req.headers["transfer-encoding"] !== undefined || (req.headers["content-length"] ?? "0") !== "0";
  const options = { method: req.method as "GET", path: req.url ?? "/", headers: requestHeaders(req), body: hasBody ? req : null };
  pool.dispatch(options, new Relay(res));
});
listen(server, () => pool.close());
