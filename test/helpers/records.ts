/**
 * Job records written and read straight in the jobs bucket, for tests that set up a state no
 * request could reach quickly (a failed job, a record still `running`). The product itself writes
 * records only through `src/jobs/transitions.ts`.
 */
import { decodeRecord, encodeRecord } from "../../src/jobs/record.js";
import type { JobRecord } from "../../src/jobs/record.js";
import type { JetStreamContext } from "../../src/nats/context.js";

/** Writes a record unconditionally; resolves to its revision. */
export function putRecord(context: Pick<JetStreamContext, "jobs">, record: JobRecord): Promise<number> {
  return context.jobs.put(record.id, encodeRecord(record));
}

/** A job's record, or `undefined`. */
export async function getRecord(context: Pick<JetStreamContext, "jobs">, id: string): Promise<JobRecord | undefined> {
  const entry = await context.jobs.get(id);
  return entry && entry.operation === "PUT" ? decodeRecord(entry.value) : undefined;
}
