import { describe, expect, it } from "vitest";
import { formatDuration, parseDuration } from "../../src/config/index.js";

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["30s", 30_000],
    ["10m", 600_000],
    ["2h", 7_200_000],
    ["7d", 604_800_000],
    ["1.5s", 1_500],
    ["1.1s", 1_100],
    ["0.5m", 30_000],
    ["0.25h", 900_000],
    ["007s", 7_000],
  ])("parses %s as %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    "",
    "10",
    "10 s",
    " 10s",
    "10s ",
    "-1s",
    "+1s",
    "1e3s",
    "10S",
    "10sec",
    ".5s",
    "5.s",
    "1h30m",
    "ten minutes",
    "0s",
    "0ms",
    "0.0h",
    "0.4ms",
  ])("rejects %j", (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });

  it("rejects values too large to be exact integers", () => {
    expect(parseDuration("999999999999999999d")).toBeUndefined();
  });

  it("rounds to whole milliseconds", () => {
    expect(parseDuration("1.6ms")).toBe(2);
    expect(parseDuration("0.0015s")).toBe(2);
  });
});

describe("formatDuration", () => {
  it.each([
    [500, "500ms"],
    [1_500, "1500ms"],
    [30_000, "30s"],
    [90_000, "90s"],
    [600_000, "10m"],
    [5_400_000, "90m"],
    [7_200_000, "2h"],
    [86_400_000, "1d"],
    [129_600_000, "36h"],
  ])("formats %d ms as %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it("is the inverse of parseDuration", () => {
    const samples = [1, 999, 1_000, 1_001, 59_999, 60_000, 3_599_000, 3_600_000, 86_400_000, 86_400_001, 2 ** 40];
    for (const ms of samples) expect(parseDuration(formatDuration(ms))).toBe(ms);
  });

  it("falls back to milliseconds for values that are not positive whole numbers", () => {
    expect(formatDuration(0)).toBe("0ms");
    expect(formatDuration(1.5)).toBe("1.5ms");
  });
});
