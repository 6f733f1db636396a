/**
 * A bare http-proxy-3 reverse proxy with a keep-alive agent and `xfwd`, in front of UPSTREAM: what
 * slowlane's passthrough was built on before it moved to undici, kept as the floor it must beat.
 */
import { Agent, createServer } from "node:http";
import { createProxyServer } from "http-proxy-3";
import { env, listen } from "./common.js";

const agent = new Agent({ keepAlive: true, keepAliveMsecs: 1_000, maxFreeSockets: 256 });
const proxy = createProxyServer({ target: env("UPSTREAM"), xfwd: true, agent });
proxy.on("error", (_err, _req, res) => {
  if (res && "writeHead" in res) {
    res.writeHead(502);
    res.end();
  }
});
listen(createServer((req, res) => proxy.web(req, res)));
