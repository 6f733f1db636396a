/**
 * The bare backend: reads the request body, answers 200 with a fixed 1 KiB JSON body.
 * `?ms=N` delays the answer by N ms; `?tag=K` prints `ANSWERED K <epoch ms, fractional>` once the
 * answer is handed to the kernel (the completion-overhead scenario reads it); `?bytes=N` answers N
 * bytes of application/octet-stream instead (the memory-bounds scenario's large result).
 */
import { createServer } from "node:http";
import type { ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { BODY_1K, listen } from "./common.js";

const HEADERS = { "content-type": "application/json", "content-length": String(BODY_1K.byteLength) };

function answer(res: ServerResponse, tag: string | null): void {
  res.writeHead(200, HEADERS);
  if (tag === null) {
    res.end(BODY_1K);
    return;
  }
  res.end(BODY_1K, () => console.log(`ANSWERED ${tag} ${performance.timeOrigin + performance.now()}`));
}

/** Large bodies by size, made once: a result of `?bytes=N` is the same bytes every time. */
const large = new Map<number, Buffer>();
function answerBytes(res: ServerResponse, bytes: number): void {
  let body = large.get(bytes);
  if (!body) {
    body = Buffer.alloc(bytes, "slowlane ");
    large.set(bytes, body);
  }
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(bytes) });
  res.end(body);
}

const server = createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    if (q === -1) return answer(res, null);
    const params = new URLSearchParams(url.slice(q + 1));
    const bytes = Number(params.get("bytes") ?? 0);
    if (bytes > 0) return answerBytes(res, bytes);
    const ms = Number(params.get("ms") ?? 0);
    const tag = params.get("tag");
    if (ms > 0) setTimeout(() => answer(res, tag), ms);
    else answer(res, tag);
  });
});
listen(server);
