import type { IncomingMessage } from "node:http";
import { describe, expect, it } from "vitest";
import { createByteBudget, toReservedBytes } from "../../src/proxy/body-budget.js";

const withHeaders = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;

describe("the byte budget", () => {
  it("reserves while it fits, refuses past it, and fits again once released", () => {
    let max = 100;
    const budget = createByteBudget(() => max);
    expect(budget.tryReserve(60)).toBe(true);
    expect(budget.tryReserve(40)).toBe(true);
    expect(budget.tryReserve(1)).toBe(false);
    budget.release(40);
    expect(budget.heldBytes).toBe(60);
    expect(budget.tryReserve(41)).toBe(false);
    max = 200; // a reload raised it
    expect(budget.tryReserve(41)).toBe(true);
  });

  it("lets one reservation larger than the whole budget pass when nothing else is held", () => {
    const budget = createByteBudget(() => 100);
    expect(budget.tryReserve(500)).toBe(true);
    expect(budget.tryReserve(0)).toBe(false);
    budget.release(500);
    expect(budget.tryReserve(0)).toBe(true);
  });
});

describe("the bytes an accept reserves", () => {
  it("is the declared length up to one message, a message for a chunked body, nothing without a body", () => {
    expect(toReservedBytes(withHeaders({ "content-length": "1000" }), 4096)).toBe(1000);
    expect(toReservedBytes(withHeaders({ "content-length": "100000" }), 4096)).toBe(4096);
    expect(toReservedBytes(withHeaders({ "transfer-encoding": "chunked" }), 4096)).toBe(4096);
    expect(toReservedBytes(withHeaders({}), 4096)).toBe(0);
  });
});
