import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { sendThisTurn } from "../../src/nats/outbox.js";

describe("sendThisTurn", () => {
  it("sends a turn's first write at once, and starts the turn's later writes together after its other work, in order", async () => {
    await nextTurn();
    const seen: string[] = [];
    const write = (name: string) => () => {
      seen.push(name);
      // A microtask queued by a batched write runs only after every write of the batch has started.
      queueMicrotask(() => seen.push(`after ${name}`));
      return Promise.resolve(name);
    };
    const first = sendThisTurn(write("a"));
    expect(seen).toEqual(["a"]);
    // Given from different microtasks of one turn, as calls finishing one after another are.
    await Promise.resolve();
    const second = sendThisTurn(write("b"));
    await Promise.resolve();
    await Promise.resolve();
    const third = sendThisTurn(write("c"));
    seen.push("turn goes on");
    await expect(Promise.all([first, second, third])).resolves.toEqual(["a", "b", "c"]);
    expect(seen.filter((s) => !s.startsWith("after a"))).toEqual(["a", "turn goes on", "b", "c", "after b", "after c"]);
  });

  it("sends the first write of the next turn at once again", async () => {
    await nextTurn();
    const seen: string[] = [];
    void sendThisTurn(() => seen.push("this turn"));
    void sendThisTurn(() => seen.push("batched"));
    await nextTurn();
    await nextTurn();
    void sendThisTurn(() => seen.push("next turn"));
    expect(seen).toEqual(["this turn", "batched", "next turn"]);
  });

  it("settles each write as it settles: a write that throws, or rejects, fails only itself", async () => {
    await nextTurn();
    const thrown = sendThisTurn(() => {
      throw new Error("closed connection");
    });
    const rejected = sendThisTurn(() => Promise.reject(new Error("no responders")));
    const batchedThrow = sendThisTurn(() => {
      throw new Error("draining");
    });
    const sync = sendThisTurn(() => 42);
    await expect(thrown).rejects.toThrow("closed connection");
    await expect(rejected).rejects.toThrow("no responders");
    await expect(batchedThrow).rejects.toThrow("draining");
    await expect(sync).resolves.toBe(42);
  });
});
