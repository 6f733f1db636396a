import { randomBytes } from "node:crypto";

/** 16 bytes from the CSPRNG, base64url: 22 URL-safe characters, 128 bits, unguessable. */
export function createJobId(): string {
  return randomBytes(16).toString("base64url");
}

const JOB_ID = /^[A-Za-z0-9_-]{22}$/;

/**
 * Guards every id that comes from a client before it is used in a subject or a KV key:
 * only the exact shape `createJobId` produces passes, so `..%2F`, wildcards and long junk never do.
 */
export function isJobId(value: string): boolean {
  return JOB_ID.test(value);
}
