/** The circuit of one route, as a state machine: when it opens, what it admits, how probes back off, what closes it. */
import { describe, expect, it } from "vitest";
import { MIN_HOLD_MS, RouteCircuit } from "../../src/worker/circuit.js";

const backoff = { initialMs: 100, maxMs: 400, factor: 2, jitter: false };

describe("a route's circuit", () => {
  it("admits every call while closed; the first unreachable call opens it and counts", () => {
    const circuit = new RouteCircuit();
    expect(circuit.admit(backoff, 0)).toEqual({ kind: "call" });
    expect(circuit.unreachable(false, backoff, 0)).toEqual({ opened: true, free: false });
    expect(circuit.isOpen).toBe(true);
    expect(circuit.since).toBe(0);
    // Calls that were running when it opened find it open: they cost nothing.
    expect(circuit.unreachable(false, backoff, 5)).toEqual({ opened: false, free: true });
  });

  it("while open, holds jobs back until the next probe, and admits one probe at a time", () => {
    const circuit = new RouteCircuit();
    circuit.unreachable(false, backoff, 0);
    // 90 ms to the next probe, but never under the floor.
    expect(circuit.admit(backoff, 10)).toEqual({ kind: "hold", delayMs: MIN_HOLD_MS });
    expect(circuit.admit(backoff, 100)).toEqual({ kind: "probe" });
    // The probe runs: the others wait about one probe delay.
    expect(circuit.admit(backoff, 101)).toEqual({ kind: "hold", delayMs: 100 });
  });

  it("backs the probes off by the route's backoff, up to backoff.max", () => {
    const circuit = new RouteCircuit();
    circuit.unreachable(false, backoff, 0);
    let now = 100;
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      expect(circuit.admit(backoff, now)).toEqual({ kind: "probe" });
      expect(circuit.unreachable(true, backoff, now)).toEqual({ opened: false, free: true });
      const hold = circuit.admit(backoff, now);
      if (hold.kind !== "hold") throw new Error("expected a hold");
      waits.push(hold.delayMs);
      now += hold.delayMs;
    }
    expect(waits).toEqual([200, 400, 400, 400, 400]);
  });

  it("closes on the first answer of any status, and says so once", () => {
    const circuit = new RouteCircuit();
    circuit.unreachable(false, backoff, 0);
    expect(circuit.admit(backoff, 100)).toEqual({ kind: "probe" });
    expect(circuit.answered()).toBe(true);
    expect(circuit.isOpen).toBe(false);
    expect(circuit.answered()).toBe(false);
    expect(circuit.admit(backoff, 101)).toEqual({ kind: "call" });
  });

  it("a probe that ends without an answer frees the slot: at once if it never called, after the backoff if it did", () => {
    const circuit = new RouteCircuit();
    circuit.unreachable(false, backoff, 0);
    expect(circuit.admit(backoff, 100)).toEqual({ kind: "probe" });
    circuit.probeEnded(false, 110);
    expect(circuit.admit(backoff, 110)).toEqual({ kind: "probe" });
    circuit.probeEnded(true, 120);
    expect(circuit.admit(backoff, 130).kind).toBe("hold");
    expect(circuit.admit(backoff, 220)).toEqual({ kind: "probe" });
  });

  it("spreads held jobs with jitter, never under the floor nor far past backoff.max", () => {
    let draw = 0;
    const circuit = new RouteCircuit(() => (draw = (draw + 0.37) % 1));
    const jittered = { ...backoff, jitter: true };
    circuit.unreachable(false, jittered, 0);
    for (let now = 0; now < 100; now += 7) {
      const hold = circuit.admit(jittered, now);
      if (hold.kind !== "hold") continue;
      expect(hold.delayMs).toBeGreaterThanOrEqual(MIN_HOLD_MS);
      expect(hold.delayMs).toBeLessThanOrEqual(jittered.maxMs + MIN_HOLD_MS);
    }
  });
});
