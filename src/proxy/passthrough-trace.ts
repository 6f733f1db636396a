/**
 * A passthrough request's spans, when tracing is on: a SERVER span continuing the client's
 * `traceparent`, and a CLIENT span for the call to the upstream, whose context replaces the
 * client's `traceparent`/`tracestate` in the forwarded headers. Both end when the answer is sent.
 * Off: nothing at all, and the client's trace headers are forwarded as they came.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { endSpan, injectTraceHeaderRecord, startClientSpan, startServerSpan } from "../tracing/index.js";
import type { TracedSpan, Tracing } from "../tracing/index.js";

/**
 * Starts both spans and sets `req.headers`' trace headers to the client span's; returns the server
 * span. A trace the sampler left out gets no client span: nothing of it is exported, and the
 * upstream continues it from the server span just the same, for half the cost.
 */
export function tracePassthrough(tracing: Tracing, upstream: string, req: IncomingMessage, res: ServerResponse): TracedSpan | undefined {
  if (!tracing.enabled) return undefined;
  const method = req.method ?? "GET";
  const server = startServerSpan(tracing, req, method);
  const client = server.span.isRecording() ? startClientSpan(tracing, server.context, { method, url: upstream + (req.url ?? "/") }) : undefined;
  injectTraceHeaderRecord((client ?? server).context, req.headers);
  res.once("close", () => {
    const end = { outcome: res.writableFinished ? String(res.statusCode) : "aborted", status: res.statusCode };
    if (client) endSpan(client.span, end);
    endSpan(server.span, end);
  });
  return server;
}
