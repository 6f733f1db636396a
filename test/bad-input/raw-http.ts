/**
 * Raw HTTP/1.1 over a plain socket, for requests no well-behaved client library will send:
 * "send these bytes, read the answers until the server closes, enough answers came, or the
 * connection goes quiet". Answers are parsed just enough to assert on (status, headers, body).
 */
import { connect } from "node:net";
import type { Socket } from "node:net";

export interface RawResponse {
  readonly statusLine: string;
  readonly status: number;
  /** Header names lower-case; repeated headers joined with ", ". */
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

export interface RawExchange {
  /** Every byte the server sent. */
  readonly raw: Buffer;
  /** Complete responses, interim (1xx) ones included, in order. */
  readonly responses: RawResponse[];
  /** The last complete response, if any. */
  readonly last: RawResponse | undefined;
  /** The server closed (or reset) the connection. */
  readonly closed: boolean;
  /** Neither closed nor enough answers before `idleMs` of silence. */
  readonly timedOut: boolean;
}

export interface RawOptions {
  /** Resolve once this many final (non-1xx) responses have arrived, without waiting for a close. */
  finalResponses?: number;
  /** Give up after this long without any byte from the server (default 3 s). */
  idleMs?: number;
  /** Pause between parts, to play a slow client (default 0: all parts written at once). */
  gapMs?: number;
  /** Destroy the socket right after writing the last part (a client that disconnects). */
  abortAfterWrite?: boolean;
  /** HEAD requests in the exchange, in order, so their answers are read without a body. */
  headRequests?: boolean[];
}

/** Splits every complete response out of `data`; `heads` marks answers to HEAD requests. */
export function parseResponses(data: Buffer, heads: readonly boolean[] = []): RawResponse[] {
  return parseFrom(data, 0, heads, 0).responses;
}

/**
 * The complete responses in `data` from `offset` on (`finals` final answers before it) and where
 * the first incomplete one starts.
 */
function parseFrom(
  data: Buffer,
  offset: number,
  heads: readonly boolean[],
  finals: number,
): { responses: RawResponse[]; offset: number } {
  const responses: RawResponse[] = [];
  const done = () => ({ responses, offset });
  for (;;) {
    const end = data.indexOf("\r\n\r\n", offset);
    if (end === -1) return done();
    const lines = data.subarray(offset, end).toString("latin1").split("\r\n");
    const statusLine = lines[0] ?? "";
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? NaN);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    let next = end + 4;
    let body: Buffer = Buffer.alloc(0);
    const interim = status >= 100 && status < 200;
    const noBody = interim || status === 204 || status === 304 || heads[finals] === true;
    if (!noBody && /chunked/i.test(headers["transfer-encoding"] ?? "")) {
      const chunks: Buffer[] = [];
      for (;;) {
        const lineEnd = data.indexOf("\r\n", next);
        if (lineEnd === -1) return done();
        const size = parseInt(data.subarray(next, lineEnd).toString("latin1"), 16);
        if (Number.isNaN(size)) return done();
        if (size === 0) {
          const trailerEnd = data.indexOf("\r\n\r\n", lineEnd);
          if (trailerEnd === -1) return done();
          next = trailerEnd + 4;
          break;
        }
        if (data.length < lineEnd + 2 + size + 2) return done();
        chunks.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
        next = lineEnd + 2 + size + 2;
      }
      body = Buffer.concat(chunks);
    } else if (!noBody) {
      const length = headers["content-length"] === undefined ? undefined : Number(headers["content-length"]);
      if (length === undefined) {
        // Delimited by the close: everything left.
        body = data.subarray(next);
        next = data.length;
      } else {
        if (data.length < next + length) return done();
        body = data.subarray(next, next + length);
        next += length;
      }
    }
    responses.push({ statusLine, status, headers, body });
    if (!interim) finals += 1;
    offset = next;
  }
}

/** Connects to 127.0.0.1:`port`, writes `parts` (with `gapMs` between them) and collects the answer. */
export async function sendRaw(
  port: number,
  parts: string | Buffer | readonly (string | Buffer)[],
  options: RawOptions = {},
): Promise<RawExchange> {
  const { finalResponses, idleMs = 3_000, gapMs = 0, abortAfterWrite = false, headRequests = [] } = options;
  const list = typeof parts === "string" || Buffer.isBuffer(parts) ? [parts] : parts;
  const socket: Socket = connect(port, "127.0.0.1");
  const chunks: Buffer[] = [];
  let closed = false;
  // Answers counted so far, so each arrival parses only what is new.
  let parsed = { offset: 0, finals: 0 };

  const done = new Promise<boolean>((resolve) => {
    let idle: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => resolve(true), idleMs);
    };
    arm();
    socket.on("data", (d: Buffer) => {
      chunks.push(d);
      arm();
      if (finalResponses !== undefined) {
        const { responses, offset } = parseFrom(Buffer.concat(chunks), parsed.offset, headRequests, parsed.finals);
        parsed = { offset, finals: parsed.finals + responses.filter((r) => r.status >= 200).length };
        if (parsed.finals >= finalResponses) {
          clearTimeout(idle);
          resolve(false);
        }
      }
    });
    // A reset after the answer is still an answer: keep what arrived.
    socket.on("error", () => undefined);
    socket.on("close", () => {
      closed = true;
      clearTimeout(idle);
      resolve(false);
    });
  });

  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  for (const [i, part] of list.entries()) {
    if (closed) break;
    if (i > 0 && gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    if (!closed) socket.write(part);
  }
  if (abortAfterWrite) socket.destroy();

  const timedOut = await done;
  socket.destroy();
  const raw = Buffer.concat(chunks);
  const responses = parseResponses(raw, headRequests);
  return { raw, responses, last: responses.filter((r) => r.status >= 200).at(-1), closed, timedOut };
}

/** A request head as bytes: `lines` joined with CRLF, ending with the blank line. */
export function head(...lines: string[]): string {
  return `${lines.join("\r\n")}\r\n\r\n`;
}
