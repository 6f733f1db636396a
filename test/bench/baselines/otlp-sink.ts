/**
 * A collector stand-in for the tracing scenario: takes OTLP/HTTP exports on `POST /v1/traces`, answers 200
 * with an empty response and keeps nothing. Prints `EXPORTS <requests> <bytes>` on SIGTERM, so the harness
 * can say how much the sampled runs exported.
 */
import { createServer } from "node:http";
import { listen } from "./common.js";

let requests = 0;
let bytes = 0;

const server = createServer((req, res) => {
  req.on("data", (chunk: Buffer) => (bytes += chunk.byteLength));
  req.on("end", () => {
    requests += 1;
    // An empty ExportTraceServiceResponse is zero bytes in protobuf.
    res.writeHead(200, { "content-type": "application/x-protobuf", "content-length": "0" });
    res.end();
  });
});
listen(server, async () => {
  console.log(`EXPORTS ${requests} ${bytes}`);
});
