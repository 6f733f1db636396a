import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ErrorCodes } from "../../src/errors.js";

describe("error codes", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");

  it("are unique", () => {
    const codes = Object.values(ErrorCodes);
    expect(new Set(codes).size).toBe(codes.length);
  });

  it.each(Object.values(ErrorCodes))("%s is documented in the README's error table", (code) => {
    expect(readme).toMatch(new RegExp(`^\\| \`${code}\` \\|`, "m"));
  });
});
