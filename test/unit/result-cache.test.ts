/**
 * The cache of finished jobs counts what an entry holds (the record with its inline body and every
 * header, and the cached body), so it evicts by bytes long before its entry count.
 */
import { describe, expect, it } from "vitest";
import { BodyLocation, JobStatus } from "../../src/jobs/record.js";
import type { JobRecord } from "../../src/jobs/record.js";
import { createResultCache } from "../../src/proxy/result-cache.js";

const KiB = 1024;

function finished(i: number, opts: { inlineBytes?: number; headerPairs?: number; headerChars?: number } = {}): { record: JobRecord; body?: Uint8Array } {
  const inlineBytes = opts.inlineBytes ?? 0;
  const headers: string[] = [];
  for (let h = 0; h < (opts.headerPairs ?? 2); h++) headers.push(`x-header-${h}`, "v".repeat(opts.headerChars ?? 20));
  const body = inlineBytes > 0 ? Buffer.alloc(inlineBytes, i & 0xff) : undefined;
  const now = Date.now();
  const record: JobRecord = {
    id: `job${i}`.padEnd(22, "x"),
    route: "reports",
    status: JobStatus.Completed,
    attempts: 1,
    createdAt: now,
    updatedAt: now,
    expiresAt: now + 3_600_000,
    response: {
      status: 200,
      headers,
      bodyBytes: inlineBytes,
      body: body ? BodyLocation.Inline : BodyLocation.None,
      ...(body ? { inline: body.toString("base64") } : {}),
    },
  };
  return body ? { record, body } : { record };
}

describe("the result cache's byte budget", () => {
  it("counts inline bodies in the record as well as the cached body", () => {
    // Each entry: about 11 KiB of base64 in the record and the 8 KiB body: 10 fit in 200 KiB, not 20.
    const cache = createResultCache({ maxBytes: 200 * KiB });
    for (let i = 0; i < 20; i++) {
      const { record, body } = finished(i, { inlineBytes: 8 * KiB });
      cache.set(record, body);
    }
    expect(cache.size).toBeGreaterThan(5);
    expect(cache.size).toBeLessThan(11);
    expect(cache.get(finished(19).record.id)).toBeDefined();
    expect(cache.get(finished(0).record.id)).toBeUndefined();
  });

  it("counts every response header", () => {
    // 100 headers of 200 characters: about 22 KiB per record, 4 fit in 100 KiB.
    const cache = createResultCache({ maxBytes: 100 * KiB });
    for (let i = 0; i < 10; i++) cache.set(finished(i, { headerPairs: 100, headerChars: 200 }).record);
    expect(cache.size).toBeLessThanOrEqual(4);
  });

  it("keeps 10,000 finished jobs with inline bodies within its default 64 MiB by evicting", () => {
    const cache = createResultCache();
    for (let i = 0; i < 10_000; i++) {
      const { record, body } = finished(i, { inlineBytes: 8 * KiB, headerPairs: 10 });
      cache.set(record, body);
    }
    // About 20 KiB each: some 3,300 fit, not the 10,000 the entry count allows.
    expect(cache.size).toBeGreaterThan(2_500);
    expect(cache.size).toBeLessThan(4_000);
  });
});
