import { describe, expect, it } from "vitest";
import { withoutHopByHop, toHeaderPairs } from "../../src/shared/hop-by-hop.js";
import { decodeEnvelope, ENVELOPE_HEADER, toEnvelopeHeaders } from "../../src/jobs/envelope.js";
import { createJobId, isJobId, isJobIdShape } from "../../src/jobs/job-id.js";
import { legacyJobId, TEST_KEYS } from "../helpers/keys.js";
import { generateKeyLine, parseServerKeys } from "../../src/security/server-keys.js";
import { toJetStreamNames } from "../../src/nats/names.js";
import { decodeRecord, encodeRecord, isExpired, toStatusBody } from "../../src/jobs/record.js";
import type { JobRecord } from "../../src/jobs/record.js";
import { backoffDelayMs, parseRetryAfterMs, retryDelayMs } from "../../src/shared/retry-policy.js";
import { headers as natsHeaders } from "@nats-io/transport-node";

describe("job ids", () => {
  it("are 28 URL-safe characters (128 random bits and a keyed tag) and never repeat", () => {
    const ids = new Set(Array.from({ length: 10_000 }, () => createJobId(TEST_KEYS)));
    expect(ids.size).toBe(10_000);
    for (const id of ids) {
      expect(id).toMatch(/^[A-Za-z0-9_-]{28}$/);
      expect(isJobId(TEST_KEYS, id)).toBe(true);
    }
  });

  it("accept legacy 22-character ids, refuse made-up 28-character ones", () => {
    expect(isJobId(TEST_KEYS, legacyJobId())).toBe(true);
    expect(isJobId(TEST_KEYS, legacyJobId() + "AAAAAA")).toBe(false);
    expect(isJobIdShape(legacyJobId() + "AAAAAA")).toBe(true);
  });

  it("stop passing once their key is dropped, though they passed a moment before under the old keys", () => {
    const oldLine = generateKeyLine();
    const newLine = generateKeyLine();
    const before = parseServerKeys(`${newLine}\n${oldLine}`, "rotating");
    const id = createJobId(parseServerKeys(oldLine, "old"));
    // Polled again and again under the keys that list the old one: passes each time (remembered after the first).
    for (let i = 0; i < 3; i++) expect(isJobId(before, id)).toBe(true);
    expect(isJobId(parseServerKeys(newLine, "after the rotation"), id)).toBe(false);
    // A tampered id never passes, however often its untampered twin did.
    const tampered = (id.startsWith("A") ? "B" : "A") + id.slice(1);
    expect(isJobId(before, tampered)).toBe(false);
  });

  it("reject anything but those exact shapes", () => {
    for (const bad of ["", "a", "*", ">", "a.b", "..%2F", "A".repeat(21), "A".repeat(23), "AAAAAAAAAAAAAAAAAAAAA=", "A".repeat(27), "A".repeat(29), "x".repeat(5000)]) {
      expect(isJobId(TEST_KEYS, bad), bad).toBe(false);
      expect(isJobIdShape(bad), bad).toBe(false);
    }
  });
});

describe("request envelope", () => {
  it("round-trips a request, including awkward header values", () => {
    const job = {
      id: createJobId(TEST_KEYS),
      route: "reports",
      method: "POST",
      url: "/reports/q3?x=1&y=%0A",
      headers: ["Content-Type", "application/json", "X-Odd", 'quote " and \\ and ünïcode', "X-Odd", "second"],
      createdAt: 1_700_000_000_000,
    };
    expect(decodeEnvelope(toEnvelopeHeaders(job))).toEqual(job);
  });

  it("refuses messages slowlane did not write", () => {
    expect(decodeEnvelope(undefined)).toBeUndefined();
    const h = natsHeaders();
    h.set(ENVELOPE_HEADER, "{not json");
    expect(decodeEnvelope(h)).toBeUndefined();
    h.set(ENVELOPE_HEADER, JSON.stringify({ v: 1, id: "x", route: "r", method: "GET", url: "/", headers: ["odd"], createdAt: 1 }));
    expect(decodeEnvelope(h)).toBeUndefined();
  });
});

describe("hop-by-hop headers", () => {
  it("drops hop-by-hop headers and those named in Connection, keeps repeats", () => {
    const pairs = ["Host", "a", "Connection", "keep-alive, X-Secret-Hop", "X-Secret-Hop", "1", "Keep-Alive", "timeout=5",
      "Transfer-Encoding", "chunked", "TE", "trailers", "Upgrade", "h2c", "Set-Cookie", "a=1", "Set-Cookie", "b=2"];
    expect(withoutHopByHop(pairs)).toEqual(["Host", "a", "Set-Cookie", "a=1", "Set-Cookie", "b=2"]);
    expect(withoutHopByHop(["Content-Length", "3", "X", "y"], new Set(["content-length"]))).toEqual(["X", "y"]);
  });

  it("flattens header objects with array values", () => {
    expect(toHeaderPairs({ a: "1", "set-cookie": ["x", "y"], skip: undefined })).toEqual(["a", "1", "set-cookie", "x", "set-cookie", "y"]);
  });
});

describe("job records", () => {
  const record: JobRecord = {
    id: "AAAAAAAAAAAAAAAAAAAAAA",
    route: "r",
    status: "completed",
    attempts: 1,
    createdAt: 1_000,
    updatedAt: 2_000,
    expiresAt: 5_000,
    response: { status: 201, headers: ["a", "b"], bodyBytes: 3, body: "kv" },
  };

  it("round-trip and reject junk", () => {
    expect(decodeRecord(encodeRecord(record))).toEqual(record);
    expect(decodeRecord(new TextEncoder().encode("null"))).toBeUndefined();
    expect(decodeRecord(new TextEncoder().encode('{"id":"x","status":"weird"}'))).toBeUndefined();
  });

  it("expire at expiresAt", () => {
    expect(isExpired(record, 4_999)).toBe(false);
    expect(isExpired(record, 5_000)).toBe(true);
    expect(isExpired({ ...record, expiresAt: undefined }, 1e15)).toBe(false);
  });

  it("render the public status body with ISO times and the result URL when final", () => {
    expect(toStatusBody(record, "/jobs/AAAAAAAAAAAAAAAAAAAAAA")).toEqual({
      id: record.id,
      status: "completed",
      route: "r",
      attempts: 1,
      createdAt: "1970-01-01T00:00:01.000Z",
      updatedAt: "1970-01-01T00:00:02.000Z",
      expiresAt: "1970-01-01T00:00:05.000Z",
      statusUrl: "/jobs/AAAAAAAAAAAAAAAAAAAAAA",
      resultUrl: "/jobs/AAAAAAAAAAAAAAAAAAAAAA/result",
      responseStatus: 201,
      links: { self: "/jobs/AAAAAAAAAAAAAAAAAAAAAA", result: "/jobs/AAAAAAAAAAAAAAAAAAAAAA/result", cancel: "/jobs/AAAAAAAAAAAAAAAAAAAAAA" },
    });
  });
});

describe("JetStream names", () => {
  it("derive every name from the prefix, one subject per job", () => {
    const n = toJetStreamNames("SL");
    expect([n.stream, n.jobsBucket, n.resultsBucket, n.bodiesStore]).toEqual(["SL", "SL_jobs", "SL_results", "SL_bodies"]);
    expect(n.jobSubject("reports", "abc")).toBe("SL.jobs.reports.abc");
    expect(n.routeFilter("reports")).toBe("SL.jobs.reports.*");
    expect(n.consumer("reports")).toBe("route_reports");
  });

  it("name completion events and callback deliveries, and parse event subjects back", () => {
    const n = toJetStreamNames("SL");
    expect(n.eventSubject("reports", "abc")).toBe("SL.events.reports.abc");
    expect(n.eventsFilter).toBe("SL.events.>");
    expect(n.parseEventSubject("SL.events.reports.abc")).toEqual({ route: "reports", id: "abc" });
    for (const bad of ["SL.events.reports", "SL.events..abc", "SL.events.reports.", "SL.events.a.b.c", "SL.jobs.reports.abc", "SLX.events.r.i"]) {
      expect(n.parseEventSubject(bad), bad).toBeUndefined();
    }
    expect([n.callbackStream, n.callbackSubject("reports", "abc"), n.callbacksFilter]).toEqual(["SL_callbacks", "SL.callbacks.reports.abc", "SL.callbacks.>"]);
  });
});

describe("retry backoff", () => {
  it("grows exponentially from 1 s, capped at 60 s, jittered within the upper half", () => {
    const backoff = { initialMs: 1_000, maxMs: 60_000, factor: 2, jitter: true };
    expect(backoffDelayMs(2, backoff, () => 0)).toBe(500);
    expect(backoffDelayMs(2, backoff, () => 1)).toBe(1_000);
    expect(backoffDelayMs(4, backoff, () => 1)).toBe(4_000);
    expect(backoffDelayMs(30, backoff, () => 1)).toBe(60_000);
    expect(backoffDelayMs(30, backoff, () => 0)).toBe(30_000);
    expect(backoffDelayMs(3, { ...backoff, jitter: false }, () => 0)).toBe(2_000);
    expect(backoffDelayMs(5, { ...backoff, factor: 1, jitter: false })).toBe(1_000);
  });

  it("reads Retry-After on 429 and 503 only, as seconds or an HTTP date, capped by backoff.max", () => {
    const now = Date.parse("2026-11-21T12:00:00Z");
    expect(parseRetryAfterMs(503, "120", now)).toBe(120_000);
    expect(parseRetryAfterMs(429, "Sat, 21 Nov 2026 12:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfterMs(429, "Sat, 21 Nov 2026 11:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfterMs(502, "120", now)).toBeUndefined();
    expect(parseRetryAfterMs(503, "soon", now)).toBeUndefined();
    expect(parseRetryAfterMs(503, undefined, now)).toBeUndefined();
    const backoff = { initialMs: 1_000, maxMs: 60_000, factor: 2, jitter: false };
    expect(retryDelayMs(2, backoff, 5_000)).toBe(5_000);
    expect(retryDelayMs(2, backoff, 3_600_000)).toBe(60_000);
    expect(retryDelayMs(3, backoff)).toBe(2_000);
  });
});
