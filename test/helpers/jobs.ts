/**
 * The jobs endpoints from a client's side: the default path, submitting a job, its status, polling
 * until final, its result (parsed, or as raw bytes), unique tags. Every test submits through
 * `submitJob` (directly, or through `startApp`'s and `useSlowlane`'s bound client).
 */
import request from "supertest";
import type { Response, Test } from "supertest";
import { expect } from "vitest";
import { waitFor } from "./wait.js";

/** The default `jobs.path`: where status and result URLs live. */
export const JOBS = "/_slowlane/jobs";

/** HTTP methods, as supertest names them or in capitals. */
export type HttpMethod = "get" | "post" | "put" | "patch" | "delete" | "head";
export type Method = HttpMethod | Uppercase<HttpMethod>;

export interface SendOptions {
  /** The request body, sent as is: `application/octet-stream` unless `headers` names a content-type. */
  body?: Buffer | string;
  headers?: Record<string, string>;
}

/** A tag unique to one test, put in the query so `backend.callsTo` sees that test's calls only. */
export function uniqueTag(label: string): string {
  return `${label}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Sends one request to the proxy at `url` and returns the answer, whatever it is (chain on it freely). */
export function sendRequest(url: string, method: Method, path: string, { body, headers = {} }: SendOptions = {}): Test {
  let req = request(url)[method.toLowerCase() as HttpMethod](path);
  for (const [name, value] of Object.entries(headers)) req = req.set(name, value);
  if (body === undefined) return req;
  if (!Object.keys(headers).some((name) => name.toLowerCase() === "content-type")) {
    req = req.set("content-type", "application/octet-stream");
  }
  return req.send(body);
}

/**
 * Submits a job on an async route of the proxy at `url` and returns its id. The answer must be the
 * accept contract's: 202 with a Location naming the job.
 */
export async function submitJob(url: string, method: Method, path: string, options: SendOptions = {}): Promise<string> {
  const res = await sendRequest(url, method, path, options);
  expect(res.status, res.text).toBe(202);
  const id = res.body.id as string;
  expect(res.headers.location).toBe(`${JOBS}/${id}`);
  return id;
}

/** GET on a job's status URL, redirects not followed (a final job answers 303). */
export function getStatus(url: string, id: string): Test {
  return request(url).get(`${JOBS}/${id}`).redirects(0);
}

/** Polls a job's status URL on the proxy at `url` until it is final; returns the 303 answer. */
export async function waitFinal(url: string, id: string, timeoutMs = 15_000): Promise<Response> {
  return waitFor(
    async () => {
      const res = await getStatus(url, id);
      return res.status === 303 ? res : undefined;
    },
    { timeoutMs, what: `job ${id} to finish` },
  );
}

/** GET on a job's result URL, the body parsed as supertest does (JSON into `body`, text into `text`). */
export function getResult(url: string, id: string): Test {
  return request(url).get(`${JOBS}/${id}/result`);
}

/** GET on a job's result URL, with the body as raw bytes (`res.body` is a Buffer). */
export async function fetchResult(url: string, id: string) {
  return request(url)
    .get(`${JOBS}/${id}/result`)
    .buffer(true)
    .parse((r, cb) => {
      const chunks: Buffer[] = [];
      r.on("data", (c: Buffer) => chunks.push(c));
      r.on("end", () => cb(null, Buffer.concat(chunks)));
    });
}

/** The jobs endpoints of one proxy, bound to its URL (read when called: a fixture's URL exists only once started). */
export interface JobsClient {
  /** Sends one request to the proxy and returns the answer, whatever it is. */
  send(method: Method, path: string, options?: SendOptions): Test;
  /** Submits a job (202 and its Location checked) and returns its id. */
  submit(method: Method, path: string, options?: SendOptions): Promise<string>;
  /** GET on the job's status URL, redirects not followed. */
  status(id: string): Test;
  /** Polls the status URL until the job is final; returns the 303 answer. */
  waitFinal(id: string, timeoutMs?: number): Promise<Response>;
  /** GET on the job's result URL, parsed as supertest does. */
  result(id: string): Test;
  /** GET on the job's result URL, the body as raw bytes. */
  resultBytes(id: string): ReturnType<typeof fetchResult>;
}

export function createJobsClient(url: () => string): JobsClient {
  return {
    send: (method, path, options) => sendRequest(url(), method, path, options),
    submit: (method, path, options) => submitJob(url(), method, path, options),
    status: (id) => getStatus(url(), id),
    waitFinal: (id, timeoutMs) => waitFinal(url(), id, timeoutMs),
    result: (id) => getResult(url(), id),
    resultBytes: (id) => fetchResult(url(), id),
  };
}
