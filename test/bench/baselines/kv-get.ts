/**
 * A bare KV-get loop behind a bare http server: `GET /kv/<key>` reads the key from BUCKET and
 * answers its value (200) or 404. The ceiling for a status poll that misses the proxy's cache.
 */
import { createServer } from "node:http";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { env, listen } from "./common.js";

// As slowlane connects: without async traces, which build an Error with a stack for every request.
const nc = await connect({ servers: env("NATS_URL").split(","), noAsyncTraces: true });
const kv = await new Kvm(jetstream(nc)).open(env("BUCKET"));

const server = createServer((req, res) => {
  const key = (req.url ?? "").slice("/kv/".length);
  kv.get(key).then(
    (entry) => {
      if (!entry || entry.operation !== "PUT") {
        res.writeHead(404, { "content-length": "0" });
        res.end();
        return;
      }
      res.writeHead(200, { "content-type": "application/json", "content-length": String(entry.value.byteLength) });
      res.end(entry.value);
    },
    () => {
      res.writeHead(503, { "content-length": "0" });
      res.end();
    },
  );
});
listen(server, () => nc.drain());
