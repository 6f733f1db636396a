/**
 * A bare Node http server holding SSE streams, the floor for the SSE fan-out: a POST is answered
 * 202 with a status URL, a GET on it gets one `event: status` with a status JSON of slowlane's size
 * and is then held open, with nothing else kept per stream.
 */
import { createServer } from "node:http";
import { listen } from "./common.js";

let next = 0;
const STATUS = (id: string) =>
  JSON.stringify({
    id,
    status: "queued",
    route: "sse",
    attempts: 0,
    createdAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(),
    statusUrl: `/_slowlane/jobs/${id}`,
    links: { self: `/_slowlane/jobs/${id}`, result: `/_slowlane/jobs/${id}/result`, cancel: `/_slowlane/jobs/${id}` },
  });

listen(
  createServer((req, res) => {
    if (req.method === "POST") {
      req.resume();
      const id = String(next++).padStart(22, "0");
      const body = JSON.stringify({ id, status: "queued", statusUrl: `/_slowlane/jobs/${id}` });
      res.writeHead(202, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body);
      return;
    }
    const id = (req.url ?? "").split("/").pop() ?? "";
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store" });
    res.write(`retry: 1000\nevent: status\nid: 0-queued\ndata: ${STATUS(id)}\n\n`);
  }),
);
