/**
 * Turns for request bodies sent in tiny chunks.
 *
 * Node parses a body chunk by chunk, and a chunk costs about the same (a parser callback, a Buffer,
 * a push, a read) whether it holds one byte or 64 KiB: a body in 1-byte chunks (chunked encoding
 * allows it) costs about a million of them per MiB, a few seconds of CPU. A few dozen such uploads
 * read at once would make each turn of the event loop last seconds, and nothing else would be
 * answered meanwhile, `/healthz` included. So once a body has brought {@link QUANTUM_CHUNKS} small
 * chunks, its reader takes turns: at most {@link READERS} such readers read at once, each for one
 * quantum (or {@link TURN_MS}, if its client is slow); the others' sockets are paused, so nothing of
 * theirs is read or parsed until their turn. A body in ordinary chunks never waits.
 *
 * Turns are process-wide: they share out the process's one event loop.
 */
import type { IncomingMessage } from "node:http";

/** A chunk smaller than this counts as small. */
const SMALL_CHUNK_BYTES = 1024;
/** Small chunks read per turn (about one or two socket reads of 1-byte chunks). */
const QUANTUM_CHUNKS = 16 * 1024;
/** Readers of small-chunked bodies reading at once. */
const READERS = 2;
/** A turn ends after this long even if its reader has not used it up (a client that stalls). */
const TURN_MS = 200;

/** A FIFO of readers waiting for one of {@link READERS} turns. */
class Turns {
  #free = READERS;
  readonly #waiting = new Set<() => void>();

  /**
   * Resolves when it is the caller's turn, to the function that ends it (it also ends after
   * {@link TURN_MS}); or to `undefined` if `gone` aborts first.
   */
  async take(gone: AbortSignal): Promise<(() => void) | undefined> {
    if (this.#free > 0 && this.#waiting.size === 0) this.#free -= 1;
    else if (!(await this.#wait(gone))) return undefined;
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

  #wait(gone: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      const granted = () => {
        gone.removeEventListener("abort", left);
        resolve(true);
      };
      const left = () => {
        this.#waiting.delete(granted);
        resolve(false);
      };
      this.#waiting.add(granted);
      gone.addEventListener("abort", left, { once: true });
    });
  }

  #pass(): void {
    const next = this.#waiting.values().next();
    if (next.done) {
      this.#free += 1;
      return;
    }
    this.#waiting.delete(next.value);
    next.value();
  }
}

const turns = new Turns();

/**
 * The body of `req`, chunk by chunk, taking turns with other small-chunked bodies as described
 * above. Ending early (`return()`) leaves the request as it is, not destroyed.
 *
 * The socket is paused only once the reads of the current loop turn are over (`setImmediate`):
 * pausing mid-read would stop the next read, not the one being parsed, whose thousands of tiny
 * Buffers would then wait with the reader (long enough to reach the old generation of the heap)
 * instead of being copied and dropped at once. While paused, reading simply waits for data;
 * the turn, when it comes, resumes the socket.
 */
export async function* inTurns(req: IncomingMessage): AsyncGenerator<Buffer> {
  const chunks = req.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Buffer>;
  const gone = new AbortController();
  const leave = () => gone.abort();
  req.once("close", leave);
  let small = 0;
  let endTurn: (() => void) | undefined;
  let done = false;
  const queueForTurn = () => {
    if (done || req.complete || gone.signal.aborted) return;
    req.socket.pause();
    void turns.take(gone.signal).then((end) => {
      if (done) end?.();
      else endTurn = end;
      // Also when the request went away: the socket may serve the next request of its connection.
      req.socket.resume();
    });
  };
  try {
    for (;;) {
      const next = await chunks.next();
      if (next.done) return;
      if (next.value.byteLength < SMALL_CHUNK_BYTES && ++small >= QUANTUM_CHUNKS) {
        small = 0;
        endTurn?.();
        endTurn = undefined;
        setImmediate(queueForTurn);
      }
      yield next.value;
    }
  } finally {
    done = true;
    endTurn?.();
    req.off("close", leave);
  }
}
