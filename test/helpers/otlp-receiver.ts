/**
 * A tiny OTLP/HTTP trace receiver on 127.0.0.1, port 0, standing in for a collector in tests.
 *
 * `POST /v1/traces` in http/json is decoded into plain span objects (`spans`). http/protobuf is
 * accepted and kept raw in `requests`, not decoded: no OTLP protobuf decoder is installed
 * (`@opentelemetry/otlp-transformer` 0.223 hand-writes the request encoder and decodes only
 * responses) and protobufjs is not a dependency. Ids and names appear verbatim in the protobuf
 * bytes, which is what tests can check. gzip bodies (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`) are
 * inflated either way.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";

/** OTLP's span kinds (the API's SpanKind plus one: 0 is UNSPECIFIED on the wire). */
export const OtlpSpanKind = { Internal: 1, Server: 2, Client: 3, Producer: 4, Consumer: 5 } as const;
/** OTLP's status codes. */
export const OtlpStatusCode = { Unset: 0, Ok: 1, Error: 2 } as const;

export type AttributeValue = string | number | boolean | null | AttributeValue[] | { [key: string]: AttributeValue };

export interface ReceivedLink {
  readonly traceId: string;
  readonly spanId: string;
  readonly attributes: Record<string, AttributeValue>;
}

/** One span as a collector would see it, ids in lower-case hex, times in ns as decimal strings. */
export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** `undefined` for a root span. */
  readonly parentSpanId: string | undefined;
  readonly name: string;
  /** {@link OtlpSpanKind}. */
  readonly kind: number;
  readonly attributes: Record<string, AttributeValue>;
  readonly links: readonly ReceivedLink[];
  /** {@link OtlpStatusCode} and the description. */
  readonly status: { readonly code: number; readonly message?: string };
  readonly startTimeUnixNano: string;
  readonly endTimeUnixNano: string;
  /** The resource's `service.name`. */
  readonly serviceName: string | undefined;
  readonly resource: Record<string, AttributeValue>;
}

/** Every export request, whatever its encoding. */
export interface ReceivedRequest {
  readonly path: string;
  readonly contentType: string;
  /** The body, inflated when it came gzipped. */
  readonly body: Buffer;
}

export interface OtlpReceiver {
  /** Base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  readonly endpoint: string;
  /** `…/v1/traces`, for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`. */
  readonly tracesUrl: string;
  /** Spans decoded from http/json requests, in arrival order. */
  readonly spans: readonly ReceivedSpan[];
  readonly requests: readonly ReceivedRequest[];
  /** Resolves with all spans so far once `predicate(spans)` holds; rejects after `timeoutMs`. */
  waitForSpans(predicate: (spans: readonly ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<readonly ReceivedSpan[]>;
  close(): Promise<void>;
}

interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
  bytesValue?: string;
}
interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: OtlpKeyValue[];
  links?: { traceId: string; spanId: string; attributes?: OtlpKeyValue[] }[];
  status?: { code?: number; message?: string };
}
interface OtlpTraceRequest {
  resourceSpans?: { resource?: { attributes?: OtlpKeyValue[] }; scopeSpans?: { spans?: OtlpSpan[] }[] }[];
}

function toValue(v: OtlpAnyValue | undefined): AttributeValue {
  if (v === undefined) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(toValue);
  if (v.kvlistValue !== undefined) return toAttributes(v.kvlistValue.values);
  return v.bytesValue ?? null;
}

function toAttributes(list: OtlpKeyValue[] | undefined): Record<string, AttributeValue> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, toValue(kv.value)]));
}

/** Flattens an ExportTraceServiceRequest (OTLP/JSON: hex ids, enums as numbers). */
function decodeJsonTraces(body: OtlpTraceRequest): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const resource = toAttributes(rs.resource?.attributes);
    const serviceName = typeof resource["service.name"] === "string" ? resource["service.name"] : undefined;
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        spans.push({
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId ? s.parentSpanId : undefined,
          name: s.name,
          kind: s.kind,
          attributes: toAttributes(s.attributes),
          links: (s.links ?? []).map((l) => ({ traceId: l.traceId, spanId: l.spanId, attributes: toAttributes(l.attributes) })),
          status: { code: s.status?.code ?? OtlpStatusCode.Unset, ...(s.status?.message ? { message: s.status.message } : {}) },
          startTimeUnixNano: String(s.startTimeUnixNano),
          endTimeUnixNano: String(s.endTimeUnixNano),
          serviceName,
          resource,
        });
      }
    }
  }
  return spans;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  const raw = Buffer.concat(chunks);
  return req.headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw;
}

/** Starts a receiver; `close()` it in `afterAll`. */
export async function createOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const requests: ReceivedRequest[] = [];
  const waiters = new Set<() => void>();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (req.method !== "POST" || path !== "/v1/traces") {
      req.resume();
      res.writeHead(404).end();
      return;
    }
    const contentType = (req.headers["content-type"] ?? "").split(";")[0]?.trim() ?? "";
    const body = await readBody(req);
    requests.push({ path, contentType, body });
    if (contentType === "application/json") {
      spans.push(...decodeJsonTraces(JSON.parse(body.toString("utf8")) as OtlpTraceRequest));
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    } else {
      // An empty ExportTraceServiceResponse is zero bytes in protobuf.
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    }
    for (const wake of waiters) wake();
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(400, { "content-type": "text/plain" }).end(String(err));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  function waitForSpans(predicate: (spans: readonly ReceivedSpan[]) => boolean, timeoutMs = 10_000): Promise<readonly ReceivedSpan[]> {
    if (predicate(spans)) return Promise.resolve([...spans]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no matching spans after ${timeoutMs} ms; received: ${spans.map((s) => `${s.name} ${s.traceId}`).join(", ") || "none"}`));
      }, timeoutMs);
      const check = () => {
        if (!predicate(spans)) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve([...spans]);
      };
      waiters.add(check);
    });
  }

  return {
    endpoint,
    tracesUrl: `${endpoint}/v1/traces`,
    spans,
    requests,
    waitForSpans,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}
