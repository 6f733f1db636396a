/** The jobs endpoints from a client's side: the default path, polling until final, results as bytes, unique tags. */
import request from "supertest";
import { waitFor } from "./wait.js";

export const JOBS = "/_slowlane/jobs";

/** A tag unique to one test, put in the query so `backend.callsTo` sees that test's calls only. */
export function uniqueTag(label: string): string {
  return `${label}-${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * Polls a job's status URL on the proxy at `url` until it is final; returns the 303 answer. A job
 * bound to its caller (route `owner`) needs the caller's `headers` (e.g. its Authorization).
 */
export async function waitFinal(url: string, id: string, timeoutMs = 15_000, headers: Record<string, string> = {}) {
  return waitFor(
    async () => {
      const res = await request(url).get(`${JOBS}/${id}`).set(headers).redirects(0);
      return res.status === 303 ? res : undefined;
    },
    { timeoutMs, what: `job ${id} to finish` },
  );
}

/** GET on a job's result URL, with the body as raw bytes (`res.body` is a Buffer). */
export async function fetchResult(url: string, id: string, headers: Record<string, string> = {}) {
  return request(url)
    .get(`${JOBS}/${id}/result`)
    .set(headers)
    .buffer(true)
    .parse((r, cb) => {
      const chunks: Buffer[] = [];
      r.on("data", (c: Buffer) => chunks.push(c));
      r.on("end", () => cb(null, Buffer.concat(chunks)));
    });
}
