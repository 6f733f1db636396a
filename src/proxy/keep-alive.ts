/**
 * One timer for every open stream or socket of a kind: each `everyMs` it pokes them all (an SSE
 * comment line, a WebSocket ping) so that proxies in between do not cut them as idle. A timer per
 * stream would cost each of thousands of waiting clients a Timeout object of its own.
 */
export class KeepAlive<T> {
  private readonly items = new Set<T>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly everyMs: number,
    private readonly poke: (item: T) => void,
  ) {}

  add(item: T): void {
    this.items.add(item);
    if (this.timer) return;
    this.timer = setInterval(() => {
      for (const each of this.items) this.poke(each);
    }, this.everyMs);
    this.timer.unref();
  }

  delete(item: T): void {
    this.items.delete(item);
    if (this.items.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
