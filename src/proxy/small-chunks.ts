/**
 * Turns for request bodies sent in tiny chunks.
 *
 * Node parses a body chunk by chunk, and a chunk costs about the same (a parser callback, a Buffer,
 * a push, a read) whether it holds one byte or 64 KiB: a body in 1-byte chunks (chunked encoding
 * allows it) costs about a million of them per MiB, a few seconds of CPU. A few dozen such uploads
 * read at once would make each turn of the event loop last seconds, and nothing else would be
 * answered meanwhile, `/healthz` included. So once a body has brought {@link QUANTUM_CHUNKS} small
 * chunks, its reader takes turns: {@link READERS} such reader reads at a time, for one
 * quantum (or {@link TURN_MS}, if its client is slow), oldest request first; the others' sockets
 * are paused, so nothing of theirs is read or parsed until their turn. A body in ordinary chunks
 * never waits.
 *
 * Turns are process-wide: they share out the process's one event loop.
 */
import type { IncomingMessage } from "node:http";

/** A chunk smaller than this counts as small. */
const SMALL_CHUNK_BYTES = 1024;
/** Small chunks read per turn (under one socket read of 1-byte chunks, which brings about 11,000). */
const QUANTUM_CHUNKS = 8 * 1024;
/** Readers of small-chunked bodies reading at once (measured: more only lengthens the loop's turns). */
const READERS = 1;
/** A turn ends after this long even if its reader has not used it up (a client that stalls). */
const TURN_MS = 200;

/**
 * Readers waiting for one of {@link READERS} turns, served oldest request first: a reader that
 * used up its turn and asks again keeps its place, so the oldest uploads finish first instead of
 * all crawling towards the request timeout together.
 */
class Turns {
  #free = READERS;
  /** Waiting readers, by the time their request started, oldest first. */
  readonly #waiting: { readonly since: number; readonly grant: () => void }[] = [];

  /**
   * Resolves when it is the caller's turn, to the function that ends it (it also ends after
   * {@link TURN_MS}); or to `undefined` if `gone` aborts first.
   */
  async take(since: number, gone: AbortSignal): Promise<(() => void) | undefined> {
    if (this.#free > 0 && this.#waiting.length === 0) this.#free -= 1;
    else if (!(await this.#wait(since, gone))) return undefined;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      this.#pass();
    };
    const timer = setTimeout(end, TURN_MS).unref();
    return end;
  }

  #wait(since: number, gone: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      if (gone.aborted) return resolve(false);
      const entry = {
        since,
        grant: () => {
          gone.removeEventListener("abort", left);
          resolve(true);
        },
      };
      const left = () => {
        this.#waiting.splice(this.#waiting.indexOf(entry), 1);
        resolve(false);
      };
      const at = this.#waiting.findIndex((w) => w.since > since);
      this.#waiting.splice(at === -1 ? this.#waiting.length : at, 0, entry);
      gone.addEventListener("abort", left, { once: true });
    });
  }

  #pass(): void {
    const next = this.#waiting.shift();
    if (next) next.grant();
    else this.#free += 1;
  }
}

const turns = new Turns();

/**
 * The parts of a connection of Node's HTTP server that hold its reads. The server parses a
 * connection from C++ (its parser consumes the socket's handle) and starts reading again whenever
 * the request is read from, unless `_paused` is set; `_paused` and the parser's `pause`/`resume`
 * are what Node's server itself uses to hold a connection (lib/_http_server.js: a pipelining client
 * whose answers back up), and the handle's `reading`/`readStop`/`readStart` what its socket
 * pause/resume handlers call. `socket.pause()` alone does not hold: the next read of the request
 * resumes the socket. Where a Node version lacks these, reads are simply not held.
 */
interface HoldableSocket {
  _paused?: boolean;
  parser?: { pause?(): void; resume?(): void } | null;
  _handle?: { reading?: boolean; readStop?(): number; readStart?(): number } | null;
}

/** Stops reading the connection after the read being parsed, until {@link releaseReads}. */
export function holdReads(req: IncomingMessage): void {
  const socket = req.socket as unknown as HoldableSocket;
  socket._paused = true;
  const handle = socket._handle;
  if (handle?.reading === true && handle.readStop) {
    handle.reading = false;
    handle.readStop();
  }
}

/** Reads the connection again, as Node's server does once a held connection may go on. */
function releaseReads(req: IncomingMessage): void {
  const socket = req.socket as unknown as HoldableSocket;
  if (socket._paused !== true) return;
  socket._paused = false;
  socket.parser?.resume?.();
  const handle = socket._handle;
  if (handle && handle.reading === false && handle.readStart && !req.socket.destroyed) {
    handle.reading = true;
    handle.readStart();
  }
}

/**
 * The body of `req`, chunk by chunk, taking turns with other small-chunked bodies as described
 * above. Ending early (`return()`) leaves the request as it is, not destroyed.
 *
 * At the end of a quantum the connection's reads are held at once, which stops the reads that
 * would follow in this loop turn (libuv reads up to 2 MiB per callback), but not the one being
 * parsed: its chunks are still read on here as they come, copied and dropped young, instead of
 * waiting with the reader. Then reading simply waits for data; the turn, when it comes, releases
 * the reads.
 */
export async function* inTurns(req: IncomingMessage): AsyncGenerator<Buffer> {
  const chunks = req.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Buffer>;
  const since = performance.now();
  // Made only for a body that waits for a turn: an AbortController aborted at every body's end
  // (a DOMException with a stack each time) cost about a tenth of the proxy's CPU at accept.
  let gone: AbortController | undefined;
  const leave = () => gone?.abort();
  let small = 0;
  let endTurn: (() => void) | undefined;
  let done = false;
  let queued = false;
  const queueForTurn = () => {
    if (gone === undefined) {
      gone = new AbortController();
      req.once("close", leave);
      if (req.destroyed) gone.abort();
    }
    holdReads(req);
    queued = true;
    void turns.take(since, gone.signal).then((end) => {
      queued = false;
      if (done) end?.();
      else endTurn = end;
      // Also when the request went away: the connection may serve its next request.
      releaseReads(req);
    });
  };
  try {
    for (;;) {
      const next = await chunks.next();
      if (next.done) return;
      if (next.value.byteLength < SMALL_CHUNK_BYTES && ++small >= QUANTUM_CHUNKS && !queued && !req.complete) {
        small = 0;
        // Queue before giving the turn up: the turn then goes to the oldest reader, this one included.
        const ending = endTurn;
        endTurn = undefined;
        queueForTurn();
        ending?.();
      }
      yield next.value;
    }
  } finally {
    done = true;
    endTurn?.();
    // Still queued (the body ended within the read being parsed): leave, and read on.
    if (gone !== undefined) {
      gone.abort();
      req.off("close", leave);
    }
  }
}
