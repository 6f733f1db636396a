/**
 * A callback receiver for tests: records every POST, verifies its Standard Webhooks signature exactly
 * as a real receiver would (`standardwebhooks`' `Webhook.verify`), and answers as the test says.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { IncomingHttpHeaders, Server, ServerResponse } from "node:http";
import { Webhook } from "standardwebhooks";

export interface ReceivedCallback {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** What `Webhook.verify` returned, or the error it threw. */
  verified: unknown;
}

/** Starts a receiver on 127.0.0.1 that pushes each delivery to `received`, then lets `answer` reply. */
export async function startWebhookReceiver(
  secret: string,
  received: ReceivedCallback[],
  answer: (path: string, res: ServerResponse) => void,
): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      let verified: unknown;
      try {
        verified = new Webhook(secret).verify(body, req.headers as Record<string, string>);
      } catch (err) {
        verified = err;
      }
      const path = req.url ?? "/";
      received.push({ path, headers: req.headers, body, verified });
      answer(path, res);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return server;
}
