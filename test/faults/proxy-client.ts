/**
 * The suite's HTTP client for the proxy: undici with keep-alive, no automatic retries and no
 * redirects followed, so every 202, 303, 503 and reset connection is seen as it happened.
 */
import { Agent, request } from "undici";

/** Longer than the proxy's own 5 s publish timeout, so a slow PubAck is answered, not cut. */
const REQUEST_TIMEOUT_MS = 15_000;

export interface ProxyAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface ProxyClient {
  /** Resolves with any HTTP answer; rejects when none came (refused, reset, timed out). */
  send(method: "GET" | "POST", path: string, body?: string): Promise<ProxyAnswer>;
  close(): Promise<void>;
}

export function createProxyClient(proxyUrl: string, connections = 64): ProxyClient {
  const agent = new Agent({ connections, keepAliveTimeout: 10_000, pipelining: 1 });
  return {
    async send(method, path, body) {
      const res = await request(`${proxyUrl}${path}`, {
        method,
        dispatcher: agent,
        headersTimeout: REQUEST_TIMEOUT_MS,
        bodyTimeout: REQUEST_TIMEOUT_MS,
        ...(body === undefined ? {} : { body, headers: { "content-type": "application/json" } }),
      });
      return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
    },
    async close() {
      await agent.destroy();
    },
  };
}

/** A short reason for an answer that was not a 202, or for no answer at all: `503`, `ECONNRESET`. */
export function describeFailure(answer: ProxyAnswer | undefined, err?: unknown): string {
  if (answer) return String(answer.status);
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : err instanceof Error ? err.name : "error";
}
