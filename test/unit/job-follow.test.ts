/**
 * The order a follower hands transitions on in: the state read first, then events newer than it,
 * duplicates dropped, nothing after the final one. The watch here is an in-memory stand-in: what
 * is under test is the follower's bookkeeping, not NATS (the integration tests use the real one).
 */
import { describe, expect, it } from "vitest";
import type { JobRecord, JobStatus } from "../../src/jobs/record.js";
import { followJob } from "../../src/proxy/job-follow.js";
import type { StatusUpdate } from "../../src/proxy/job-follow.js";
import type { JobWatch, Watcher } from "../../src/proxy/job-watch.js";

const ID = "AAAAAAAAAAAAAAAAAAAAAA";

function record(status: JobStatus, updatedAt: number): JobRecord {
  return { id: ID, route: "r", status, attempts: 1, createdAt: 0, updatedAt };
}

function event(status: JobStatus, updatedAt: number) {
  const body = { id: ID, status, route: "r", updatedAt: new Date(updatedAt).toISOString() } as StatusUpdate["body"];
  return { route: "r", body, json: JSON.stringify(body) };
}

function fakeWatch() {
  const state = { watcher: undefined as Watcher | undefined, unwatched: 0 };
  const watch = {
    async watch(_id: string, watcher: Watcher) {
      state.watcher = watcher;
      return () => void (state.unwatched += 1);
    },
  } as unknown as JobWatch;
  return { watch, state };
}

describe("followJob", () => {
  it("hands on only events newer than the state read, in order, and stops after the final one", async () => {
    const { watch, state } = fakeWatch();
    let release!: (r: { record: JobRecord }) => void;
    const reading = followJob({ watch, jobsPath: "/j" }, ID, () => new Promise((resolve) => (release = resolve)));
    await new Promise((r) => setImmediate(r));
    // While the record is read: an older state, the same state, and a newer one arrive.
    state.watcher?.onEvent(event("queued", 1_000));
    state.watcher?.onEvent(event("running", 2_000));
    state.watcher?.onEvent(event("queued", 2_500));
    release({ record: record("running", 2_000) });
    const { body, follower } = await reading;
    expect(body).toMatchObject({ status: "running", statusUrl: `/j/${ID}` });

    const seen: string[] = [];
    follower.start((u) => seen.push(`${u.body.status}@${Date.parse(u.body.updatedAt)}`), () => seen.push("shutdown"));
    expect(seen).toEqual(["queued@2500"]);
    state.watcher?.onEvent(event("running", 3_000));
    state.watcher?.onEvent(event("running", 3_000));
    state.watcher?.onEvent(event("completed", 4_000));
    state.watcher?.onEvent(event("failed", 5_000));
    expect(seen).toEqual(["queued@2500", "running@3000", "completed@4000"]);
    expect(state.unwatched).toBe(1);
  });

  it("always hands on a final event that came during the read, whatever its clock says", async () => {
    const { watch, state } = fakeWatch();
    let release!: (r: { record: JobRecord }) => void;
    const reading = followJob({ watch, jobsPath: "/j" }, ID, () => new Promise((resolve) => (release = resolve)));
    await new Promise((r) => setImmediate(r));
    state.watcher?.onEvent(event("completed", 500));
    release({ record: record("running", 2_000) });
    const { follower } = await reading;
    const seen: string[] = [];
    follower.start((u) => seen.push(u.body.status), () => undefined);
    expect(seen).toEqual(["completed"]);
  });

  it("stops at once when the job is final already, and tells of a shutdown that came before start", async () => {
    const { watch, state } = fakeWatch();
    const done = await followJob({ watch, jobsPath: "/j" }, ID, async () => ({ record: record("completed", 1) }));
    expect(state.unwatched).toBe(1);
    expect(done.body.status).toBe("completed");

    const other = fakeWatch();
    const { follower } = await followJob({ watch: other.watch, jobsPath: "/j" }, ID, async () => ({ record: record("queued", 1) }));
    other.state.watcher?.onClose?.();
    const seen: string[] = [];
    follower.start(() => seen.push("update"), () => seen.push("shutdown"));
    expect(seen).toEqual(["shutdown"]);
  });

  it("lets go of the watch when the read fails", async () => {
    const { watch, state } = fakeWatch();
    await expect(followJob({ watch, jobsPath: "/j" }, ID, async () => Promise.reject(new Error("404")))).rejects.toThrow("404");
    expect(state.unwatched).toBe(1);
  });
});
