/**
 * The fault suite, bigger and standalone (`npm run soak`): more jobs, more workers, more faults.
 * Parameters from SOAK_JOBS, SOAK_WORKERS, SOAK_WORKER_KILLS, SOAK_PROXY_KILLS, SOAK_NATS_TERMS,
 * SOAK_NATS_KILLS, SOAK_BACKEND_KILLS, SOAK_BACKEND_OUTAGE_MS, SOAK_SEED... (see run-faults.ts). Exits 1 when anything was lost, failed or
 * mismatched. Needs `npm run build` first.
 */
import { CI_FAULT_RUN, createFaultRun, formatReport, readFaultRunOptions } from "./run-faults.js";
import { Fault } from "./nemesis.js";

const options = readFaultRunOptions(process.env, "SOAK", {
  ...CI_FAULT_RUN,
  jobs: 20_000,
  workers: 3,
  clientConcurrency: 16,
  faults: { [Fault.WorkerKill]: 20, [Fault.ProxyKill]: 8, [Fault.NatsTerm]: 4, [Fault.NatsKill]: 4, [Fault.BackendKill]: 4 },
  backendOutageMs: 10_000,
  submitTimeoutMs: 30 * 60_000,
  checkTimeoutMs: 5 * 60_000,
});
const started = Date.now();
const faultRun = createFaultRun({
  ...options,
  note: (line) => console.log(`[soak +${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`),
});

let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    interrupted = true;
    console.error(`${signal}: stopping every process`);
    void faultRun.close().finally(() => process.exit(130));
  });
}

try {
  const report = await faultRun.run();
  console.log(formatReport(report));
  const ok =
    report.error === undefined && report.lost === 0 && report.failed === 0 && report.mismatched === 0 && report.givenUp === 0;
  process.exitCode = ok ? 0 : 1;
} catch (err) {
  if (!interrupted) {
    console.error(err);
    process.exitCode = 1;
  }
} finally {
  await faultRun.close();
}
