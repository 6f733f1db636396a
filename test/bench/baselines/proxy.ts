/**
 * A bare http-proxy-3 reverse proxy with a keep-alive agent, in front of UPSTREAM. Same agent
 * settings and `xfwd` as slowlane's passthrough, nothing else: the ceiling for passthrough.
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
