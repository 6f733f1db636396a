/**
 * The fault-injection suite at CI size: real nats-server, proxy and worker processes of the
 * built CLI (npm run build first), SIGKILLed and restarted while a client submits jobs, and the
 * backend killed for a few seconds. Nothing accepted may be lost, every result must be its own
 * job's, and nothing may fail: the backend's outage outlasts the route's attempts, which only the
 * route's circuit keeps; repeated backend calls (at-least-once after a crash mid-call) are
 * reported, not failed.
 *
 * FAULTS_JOBS, FAULTS_SEED, FAULTS_WORKER_KILLS... override the CI parameters (see run-faults.ts).
 */
import { afterAll, describe, expect, it } from "vitest";
import { CI_FAULT_RUN, createFaultRun, formatReport, readFaultRunOptions } from "./run-faults.js";

const options = readFaultRunOptions(process.env, "FAULTS", CI_FAULT_RUN);
const faultRun = createFaultRun({ ...options, note: (line) => console.log(`[faults] ${line}`) });
afterAll(() => faultRun.close());

describe("fault injection", () => {
  it("loses no accepted job while workers, the proxy, nats-server and the backend crash", { timeout: 175_000 }, async () => {
    const report = await faultRun.run();
    console.log(formatReport(report));

    expect(report.error).toBeUndefined();
    expect(report.givenUp).toBe(0);
    expect(report.traces, "lost or mismatched jobs, 404s for accepted jobs").toEqual([]);
    expect(report.statusAnomalies).toEqual([]);
    expect(report.lost).toBe(0);
    expect(report.mismatched).toBe(0);
    expect(report.failed).toBe(0);
    expect(report.completed).toBe(report.accepted);
    expect(report.accepted).toBe(options.jobs);
    expect(Object.values(report.faults).reduce((a, b) => a + b, 0)).toBe(report.plannedFaults);
  });
});
