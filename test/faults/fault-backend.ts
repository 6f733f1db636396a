/**
 * The backend for the fault suite: answers `/work/<token>?try=<n>` after a random latency with a
 * JSON body naming the token and the submission, and counts calls per submission so the checker
 * can tell a repeated call (at-least-once after a crash) from a client's own retry.
 *
 * A submission key is `<token>#<try>`: one HTTP submission, which the proxy turns into at most
 * one job. The client retries a token under a new `try` when it got no 202.
 *
 * The nemesis can kill it (every connection cut, the port closed: calls in flight get a reset,
 * new ones are refused) and start it again on the same port; its counts survive.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Random } from "./random.js";

export interface FaultBackendOptions {
  random: Random;
  /** Share of calls that are slow (500-2000 ms) instead of quick (0-300 ms). */
  slowShare?: number;
}

/** What the backend answers; the checker compares it with the submission it expects. */
export interface FaultAnswer {
  token: string;
  try: number;
  /** 1 for the first call of this submission, 2 for a repeat... */
  call: number;
}

export interface FaultBackend {
  readonly url: string;
  /** Calls received so far, repeats included. */
  readonly calls: number;
  /** Responses written in full (the caller may still have died before reading them). */
  readonly answered: number;
  /** Calls received for one submission key. */
  callsFor(key: string): number;
  /** True once a response for this submission key was written in full. */
  hasAnswered(key: string): boolean;
  /** Every submission key the backend has seen, with its call count. */
  callCounts(): ReadonlyMap<string, number>;
  /** Cuts every connection and stops listening, as a crashed backend process would. */
  kill(): Promise<void>;
  /** Listens again on the same port. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export function toSubmissionKey(token: string, tryNo: number): string {
  return `${token}#${tryNo}`;
}

export async function startFaultBackend(options: FaultBackendOptions): Promise<FaultBackend> {
  const { random } = options;
  const slowShare = options.slowShare ?? 0.05;
  const callCounts = new Map<string, number>();
  const answeredKeys = new Set<string>();
  const sockets = new Set<Socket>();
  let calls = 0;
  let answered = 0;

  const latencyMs = (): number => (random() < slowShare ? 500 + random() * 1_500 : random() * 300);

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://backend");
    const match = /^\/work\/([A-Za-z0-9_-]+)$/.exec(url.pathname);
    const tryNo = Number(url.searchParams.get("try"));
    req.resume();
    if (!match || !Number.isInteger(tryNo)) {
      res.writeHead(400, { "content-type": "text/plain" }).end(`not a fault-suite request: ${req.url}`);
      return;
    }
    const token = match[1] as string;
    const key = toSubmissionKey(token, tryNo);
    const call = (callCounts.get(key) ?? 0) + 1;
    callCounts.set(key, call);
    calls += 1;
    setTimeout(() => {
      const answer: FaultAnswer = { token, try: tryNo, call };
      res.on("finish", () => {
        answered += 1;
        answeredKeys.add(key);
      });
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
    }, latencyMs());
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  let listening = true;
  const stop = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sockets) s.destroy();
    await closed;
  };

  return {
    url: `http://127.0.0.1:${port}`,
    get calls() {
      return calls;
    },
    get answered() {
      return answered;
    },
    callsFor: (key) => callCounts.get(key) ?? 0,
    hasAnswered: (key) => answeredKeys.has(key),
    callCounts: () => callCounts,
    kill: stop,
    async restart() {
      if (listening) return;
      server.listen(port, "127.0.0.1");
      await once(server, "listening");
      listening = true;
    },
    close: stop,
  };
}
