import { describe, expect, it } from "vitest";
import { createLogger, lazyChild } from "../../src/log.js";
import { createLogSink } from "../helpers/slowlane.js";

describe("log redaction", () => {
  it("redacts authorization, cookie, set-cookie and configured headers wherever headers are logged", () => {
    const sink = createLogSink();
    const log = createLogger({ destination: sink.stream, redactHeaders: ["X-Api-Key"] });
    const headers = {
      authorization: "Bearer secret-token",
      cookie: "session=secret",
      "set-cookie": ["a=secret"],
      "x-api-key": "secret-key",
      "x-trace": "visible",
    };
    log.info({ headers }, "top level");
    log.info({ req: { headers } }, "nested once");
    log.info({ job: { request: { headers } } }, "nested twice");

    expect(sink.lines).toHaveLength(3);
    const text = JSON.stringify(sink.lines);
    expect(text).not.toContain("secret");
    expect(sink.lines[0]?.headers).toMatchObject({ authorization: "[redacted]", "x-trace": "visible" });
    expect((sink.lines[1]?.req as { headers: object }).headers).toMatchObject({ cookie: "[redacted]" });
    const deep = (sink.lines[2]?.job as { request: { headers: Record<string, unknown> } }).request.headers;
    expect(deep["x-api-key"]).toBe("[redacted]");
    expect(deep["x-trace"]).toBe("visible");
  });
});

describe("log redaction leaves what it is given alone", () => {
  it("censors a copy: the logged object keeps its values, and a header's case does not hide it", () => {
    const sink = createLogSink();
    const log = createLogger({ destination: sink.stream });
    const request = { method: "GET", headers: { Authorization: "Bearer secret-token", accept: "*/*" } };
    log.info({ request, attempt: 1 }, "nested, capitalised");
    log.child({ headers: { cookie: "session=secret" } }).info("bound");
    log.info({ note: { deeper: { still: { headers: { cookie: "not reached, three levels down" } } } } }, "too deep");

    expect(request.headers.Authorization).toBe("Bearer secret-token");
    const logged = sink.lines[0]?.request as { method: string; headers: Record<string, string> };
    expect(logged).toEqual({ method: "GET", headers: { Authorization: "[redacted]", accept: "*/*" } });
    expect(sink.lines[0]?.attempt).toBe(1);
    expect(sink.lines[1]?.headers).toEqual({ cookie: "[redacted]" });
    // As pino's redact paths were: the line's own keys and two levels below, no deeper.
    expect(JSON.stringify(sink.lines[2])).toContain("not reached");
  });
});

describe("lazyChild", () => {
  it("binds its fields on the lines it writes, and makes the child only when a line is written", () => {
    const sink = createLogSink();
    const log = createLogger({ destination: sink.stream });
    let made = 0;
    const bindings = () => ((made += 1), { trace_id: "t1", span_id: "s1" });
    const unused = lazyChild(log, bindings);
    expect(unused).toBeDefined();
    expect(made).toBe(0);
    const child = lazyChild(log, bindings);
    child.warn({ path: "/x" }, "first");
    child.info("second");
    expect(made).toBe(1);
    expect(sink.lines).toEqual([
      expect.objectContaining({ msg: "first", path: "/x", trace_id: "t1", span_id: "s1" }),
      expect.objectContaining({ msg: "second", trace_id: "t1", span_id: "s1" }),
    ]);
  });
});
