/** A bare Node http server answering a fixed 1 KiB body: the ceiling for status polls. */
import { createServer } from "node:http";
import { BODY_1K, listen } from "./common.js";

const HEADERS = { "content-type": "application/json", "content-length": String(BODY_1K.byteLength) };
listen(createServer((_req, res) => {
  res.writeHead(200, HEADERS);
  res.end(BODY_1K);
}));
