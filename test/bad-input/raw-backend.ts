/**
 * A backend on a plain socket that records every byte it is sent and reads them with a strict,
 * minimal HTTP/1.1 parser of its own, so a test sees requests as the backend's SOCKET delivers them
 * (Node's server would hide framing). Each complete request is answered at once with 200 JSON
 * `{ method, target, bodyBytes }`; a WebSocket upgrade is switched (101) and echoed. Bytes that do not
 * parse as a request, or two framings at once, are recorded in `problems` and the connection closed.
 */
import { once } from "node:events";
import { createServer } from "node:net";
import type { AddressInfo, Socket } from "node:net";

/** One request as the backend's parser read it off the socket. */
export interface ReceivedRequest {
  readonly method: string;
  readonly target: string;
  /** Header lines in order, names lower-case. */
  readonly headers: readonly (readonly [string, string])[];
  readonly body: Buffer;
  /** How the body was delimited: by `content-length`, by chunked coding, or not at all (no body). */
  readonly framing: "content-length" | "chunked" | "none";
  /** Index of the backend connection it arrived on. */
  readonly connection: number;
}

export interface RawBackend {
  readonly url: string;
  readonly port: number;
  /** Every request parsed, in arrival order. */
  readonly requests: ReceivedRequest[];
  /** Everything that was not a well-framed request (the evidence of smuggling or broken framing). */
  readonly problems: string[];
  /** All bytes received, per connection. */
  readonly received: Buffer[];
  /** The values of header `name` (lower-case) in `request`. */
  header(request: ReceivedRequest, name: string): string[];
  close(): Promise<void>;
}

type Parsed = { request: Omit<ReceivedRequest, "connection">; rest: Buffer } | { problem: string } | undefined;

/** Reads a chunked body from `data` at `offset`: the body and where it ends, `undefined` if incomplete. */
function readChunked(data: Buffer, offset: number): { body: Buffer; end: number } | { problem: string } | undefined {
  const chunks: Buffer[] = [];
  let at = offset;
  for (;;) {
    const lineEnd = data.indexOf("\r\n", at);
    if (lineEnd === -1) return undefined;
    const sizeText = data.subarray(at, lineEnd).toString("latin1");
    if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) return { problem: `bad chunk size line ${JSON.stringify(sizeText)}` };
    const size = parseInt(sizeText, 16);
    if (size === 0) {
      const end = data.indexOf("\r\n\r\n", lineEnd);
      // "0\r\n\r\n": the trailer section is empty, the blank line follows the size line at once.
      if (data.subarray(lineEnd, lineEnd + 4).toString("latin1") === "\r\n\r\n") return { body: Buffer.concat(chunks), end: lineEnd + 4 };
      return end === -1 ? undefined : { body: Buffer.concat(chunks), end: end + 4 };
    }
    if (data.length < lineEnd + 2 + size + 2) return undefined;
    if (data.subarray(lineEnd + 2 + size, lineEnd + 4 + size).toString("latin1") !== "\r\n") return { problem: "chunk not followed by CRLF" };
    chunks.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 4 + size;
  }
}

/** Parses one request from the start of `data`. */
function parseRequest(data: Buffer): Parsed {
  const headEnd = data.indexOf("\r\n\r\n");
  if (headEnd === -1) return undefined;
  const lines = data.subarray(0, headEnd).toString("latin1").split("\r\n");
  const line = /^([A-Z]+) (\S+) HTTP\/1\.1$/.exec(lines[0] ?? "");
  if (!line) return { problem: `not a request line: ${JSON.stringify(lines[0])}` };
  const headers: [string, string][] = [];
  for (const h of lines.slice(1)) {
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(h);
    if (!m) return { problem: `not a header line: ${JSON.stringify(h)}` };
    headers.push([(m[1] as string).toLowerCase(), m[2] as string]);
  }
  const lengths = headers.filter(([n]) => n === "content-length").map(([, v]) => v);
  const codings = headers.filter(([n]) => n === "transfer-encoding").map(([, v]) => v);
  if (lengths.length + codings.length > 1) return { problem: `ambiguous framing: ${JSON.stringify([...lengths, ...codings])}` };
  const base = { method: line[1] as string, target: line[2] as string, headers };
  const bodyStart = headEnd + 4;
  if (codings.length === 1) {
    if (codings[0]?.toLowerCase() !== "chunked") return { problem: `transfer-encoding ${codings[0]}` };
    const chunked = readChunked(data, bodyStart);
    if (chunked === undefined || "problem" in chunked) return chunked;
    return { request: { ...base, body: chunked.body, framing: "chunked" }, rest: data.subarray(chunked.end) };
  }
  if (lengths.length === 1) {
    if (!/^\d+$/.test(lengths[0] as string)) return { problem: `content-length ${lengths[0]}` };
    const length = Number(lengths[0]);
    if (data.length < bodyStart + length) return undefined;
    const body = data.subarray(bodyStart, bodyStart + length);
    return { request: { ...base, body, framing: "content-length" }, rest: data.subarray(bodyStart + length) };
  }
  return { request: { ...base, body: Buffer.alloc(0), framing: "none" }, rest: data.subarray(bodyStart) };
}

/** A whole response for `request` (head and body), or `undefined` for the default answer. */
export type Responder = (request: ReceivedRequest) => string | undefined;

function answer(socket: Socket, request: ReceivedRequest, respond: Responder | undefined): void {
  const custom = respond?.(request);
  if (custom !== undefined) return void socket.write(custom);
  const json = JSON.stringify({ method: request.method, target: request.target, bodyBytes: request.body.length });
  const close = request.headers.some(([n, v]) => n === "connection" && /close/i.test(v));
  const head = [`HTTP/1.1 200 OK`, "content-type: application/json", `content-length: ${Buffer.byteLength(json)}`];
  if (close) head.push("connection: close");
  socket.write(`${head.join("\r\n")}\r\n\r\n${request.method === "HEAD" ? "" : json}`);
  if (close) socket.end();
}

/** Starts the backend on 127.0.0.1, port 0; `respond` may answer some requests its own way. */
export async function startRawBackend(respond?: Responder): Promise<RawBackend> {
  const requests: ReceivedRequest[] = [];
  const problems: string[] = [];
  const received: Buffer[] = [];
  const sockets = new Set<Socket>();

  const server = createServer((socket) => {
    const connection = received.length;
    received.push(Buffer.alloc(0));
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    let pending: Buffer = Buffer.alloc(0);
    let upgraded = false;
    socket.on("data", (data: Buffer) => {
      received[connection] = Buffer.concat([received[connection] as Buffer, data]);
      if (upgraded) return void socket.write(data);
      pending = Buffer.concat([pending, data]);
      for (;;) {
        const parsed = parseRequest(pending);
        if (parsed === undefined) return;
        if ("problem" in parsed) {
          problems.push(parsed.problem);
          return void socket.destroy();
        }
        const request = { ...parsed.request, connection };
        requests.push(request);
        pending = parsed.rest;
        if (parsed.request.headers.some(([n, v]) => n === "upgrade" && v.toLowerCase() === "websocket")) {
          upgraded = true;
          socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n");
          if (pending.length > 0) socket.write(pending);
          return;
        }
        answer(socket, request, respond);
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    problems,
    received,
    header: (request, name) => request.headers.filter(([n]) => n === name).map(([, v]) => v),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
