/**
 * NATS writes sent together, once per turn of the event loop.
 *
 * nats.js sends what was written at the end of the current microtask queue, so every request that
 * finishes in its own I/O callback (an HTTP request's body, a backend's answer, a PubAck) sends
 * its next NATS write in a frame of its own: a socket write here, a read on the nats-server's
 * side. Under load that is most of the proxy's and the worker's system time. A write given to
 * {@link sendThisTurn} starts in the `setImmediate` phase instead, after the turn's I/O callbacks,
 * together with every other write of the turn: one frame for all of them.
 *
 * A write waits at most for the end of the turn it was made in. Nothing that must follow it runs
 * before it is confirmed (callers await it), so the order of one job's writes is unchanged.
 */

type Start = () => void;

let queued: Start[] = [];

function flush(): void {
  const starts = queued;
  queued = [];
  for (const start of starts) start();
}

/** Starts `write` with the other NATS writes of this turn; settles as it does. */
export function sendThisTurn<T>(write: () => Promise<T> | T): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (queued.length === 0) setImmediate(flush);
    queued.push(() => {
      try {
        Promise.resolve(write()).then(resolve, reject);
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}
