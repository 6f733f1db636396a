/** Path normalisation before routing: RFC 3986 §5.2.4 after decoding unreserved escapes, and what is refused. */
import { describe, expect, it } from "vitest";
import { BadRequestError } from "../../src/errors.js";
import { normalizePath, normalizeTarget, parseRequestTarget, pathVariants, toOriginForm } from "../../src/proxy/normalize-path.js";

describe("normalizePath", () => {
  it.each([
    ["/", "/"],
    ["/reports/q3", "/reports/q3"],
    ["/reports/q3/", "/reports/q3/"],
    ["/.hidden/file.txt", "/.hidden/file.txt"],
    ["/a/..b/c.", "/a/..b/c."],
    ["/./reports/q3", "/reports/q3"],
    ["/%2e/reports/q3", "/reports/q3"],
    ["/%2E/reports/q3", "/reports/q3"],
    ["/reports/../reports/q3", "/reports/q3"],
    ["/x/.%2e/reports/q3", "/reports/q3"],
    ["/x/%2E%2e/reports/q3", "/reports/q3"],
    // RFC 3986 §5.4 examples, as absolute paths.
    ["/a/b/c/./../../g", "/a/g"],
    ["/b/c/d;p/../g", "/b/c/g"],
    ["/a/b/..", "/a/"],
    ["/a/b/.", "/a/b/"],
    ["/a/..", "/"],
    ["/.", "/"],
    ["/a/./", "/a/"],
    // Unreserved characters decoded (RFC 3986 §2.3, §6.2.2.2), other escapes upper-cased (§6.2.2.1).
    ["/%72eports/q3", "/reports/q3"],
    ["/%41%7a%30%2D%5F%7E", "/Az0-_~"],
    ["/caf%c3%a9", "/caf%C3%A9"],
    ["/a%20b", "/a%20b"],
    ["/a%25b", "/a%25b"],
    ["/a%252e", "/a%252e"],
    ["/100%3b", "/100%3B"],
    // Doubled slashes are kept (pathVariants decides whether they are safe).
    ["//reports/q3", "//reports/q3"],
    ["/a//b", "/a//b"],
  ])("%s → %s", (path, normalized) => {
    expect(normalizePath(path)).toBe(normalized);
  });

  it("returns the very same string when there is nothing to do", () => {
    const path = "/reports/q3/items";
    expect(normalizePath(path)).toBe(path);
  });

  it.each([
    ["an encoded slash", "/reports%2Fq3"],
    ["an encoded slash, lower case", "/reports%2fq3"],
    ["an encoded backslash", "/reports%5Cq3"],
    ["an encoded backslash, lower case", "/reports%5cq3"],
    ["a backslash", "/reports\\q3"],
    ["a backslash with dots", "/x\\..\\reports"],
    ["a malformed escape", "/a%zz"],
    ["a truncated escape", "/a%2"],
    ["a lone percent sign", "/100%"],
    ["dot-dot at the root", "/.."],
    ["dot-dot above the root", "/../reports/q3"],
    ["dot-dot above the root, later", "/a/../../b"],
    ["encoded dot-dot above the root", "/%2e%2e/etc/passwd"],
    ["an empty segment with a dot-dot", "/a//../reports"],
    ["an empty segment with a dot", "/a/.//reports"],
  ])("refuses %s: %s", (_name, path) => {
    expect(() => normalizePath(path)).toThrow(BadRequestError);
  });
});

describe("normalizeTarget and parseRequestTarget", () => {
  it("normalises the path and keeps the query byte for byte", () => {
    expect(normalizeTarget("/./reports/q3?next=/../admin&x=%2e%2F")).toBe("/reports/q3?next=/../admin&x=%2e%2F");
    expect(normalizeTarget("/reports/q3?")).toBe("/reports/q3?");
  });

  it("refuses a fragment anywhere in the target", () => {
    expect(() => normalizeTarget("/reports#x")).toThrow(BadRequestError);
    expect(() => normalizeTarget("/reports?a=1#x")).toThrow(BadRequestError);
  });

  it("reduces the absolute form to its path, then normalises it", () => {
    expect(toOriginForm("http://evil.example/./reports/q3?a=1")).toBe("/./reports/q3?a=1");
    expect(parseRequestTarget("http://evil.example/./reports/q3?a=1")).toBe("/reports/q3?a=1");
    expect(parseRequestTarget("http://evil.example")).toBe("/");
    expect(parseRequestTarget("http://evil.example?a")).toBe("/?a");
  });

  it.each(["*", "evil.example:443", "reports/q3", ""])("refuses a target that is not a path: %j", (target) => {
    expect(() => parseRequestTarget(target)).toThrow(BadRequestError);
  });
});

describe("pathVariants", () => {
  it.each([
    ["/", []],
    ["/reports/q3", []],
    ["/reports/q3/", ["/reports/q3"]],
    ["//reports/q3", ["/reports/q3"]],
    ["/a//b///c", ["/a/b/c"]],
    ["/a//b/", ["/a/b/", "/a//b", "/a/b"]],
    ["//", ["/"]],
  ])("%s → %j", (path, variants) => {
    expect(pathVariants(path)).toEqual(variants);
  });
});
