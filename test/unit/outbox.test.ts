import { describe, expect, it } from "vitest";
import { sendThisTurn } from "../../src/nats/outbox.js";

describe("sendThisTurn", () => {
  it("starts the writes of one turn together, after the turn's other work, in the order they were given", async () => {
    const seen: string[] = [];
    const write = (name: string) => () => {
      seen.push(name);
      // A microtask queued by a write runs only after every write of the batch has started.
      queueMicrotask(() => seen.push(`after ${name}`));
      return Promise.resolve(name);
    };
    // Given from different microtasks of one turn, as calls finishing one after another are.
    const first = sendThisTurn(write("a"));
    await Promise.resolve();
    const second = sendThisTurn(write("b"));
    await Promise.resolve();
    await Promise.resolve();
    const third = sendThisTurn(write("c"));
    seen.push("turn goes on");
    await expect(Promise.all([first, second, third])).resolves.toEqual(["a", "b", "c"]);
    expect(seen.slice(0, 4)).toEqual(["turn goes on", "a", "b", "c"]);
  });

  it("settles each write as it settles: a write that throws, or rejects, fails only itself", async () => {
    const thrown = sendThisTurn(() => {
      throw new Error("closed connection");
    });
    const rejected = sendThisTurn(() => Promise.reject(new Error("no responders")));
    const sync = sendThisTurn(() => 42);
    await expect(thrown).rejects.toThrow("closed connection");
    await expect(rejected).rejects.toThrow("no responders");
    await expect(sync).resolves.toBe(42);
  });

  it("starts a write given while a batch is being started with the next turn's writes", async () => {
    const order: string[] = [];
    let inner: Promise<string> | undefined;
    const outer = sendThisTurn(() => {
      order.push("outer");
      inner = sendThisTurn(() => (order.push("inner"), "inner"));
      order.push("outer done");
      return "outer";
    });
    await outer;
    await inner;
    expect(order).toEqual(["outer", "outer done", "inner"]);
  });
});
