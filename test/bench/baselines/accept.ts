/**
 * A minimal accept server: reads the body, publishes it once to a file-storage work-queue stream
 * (with a random Nats-Msg-Id, as an accepted job needs an id) and answers 202 after the PubAck.
 * The ceiling for slowlane's accept path. The harness creates STREAM (subjects `<STREAM>.>`).
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { env, listen } from "./common.js";

// As slowlane connects: without async traces, which build an Error with a stack for every request.
const nc = await connect({ servers: env("NATS_URL").split(","), noAsyncTraces: true });
const js = jetstream(nc);
const subject = `${env("STREAM")}.jobs`;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const id = randomBytes(16).toString("base64url");
    const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
    js.publish(`${subject}.${id}`, body, { msgID: id }).then(
      () => {
        const json = `{"id":"${id}","status":"queued"}`;
        res.writeHead(202, { "content-type": "application/json", "content-length": String(json.length) });
        res.end(json);
      },
      () => {
        res.writeHead(503);
        res.end();
      },
    );
  });
});
listen(server, () => nc.drain());
