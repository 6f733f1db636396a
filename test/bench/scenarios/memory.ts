/**
 * Memory. Proxy: RSS growth while BENCH_JOBS jobs are accepted and left queued (no workers),
 * measured from after a 2 000-request warm-up. Worker: RSS while it drains all of them, from the
 * end of its warm-up (10% of the jobs, at least 5 000: its heap takes a few thousand jobs to reach
 * its working size) to the end, and the peak in between.
 */
import type { BenchContext } from "../lib/context.js";
import { slowlaneConfig, Stack } from "../lib/context.js";
import { BODY_1K, connectHarness, watchDrain } from "../lib/jobs.js";
import { cannon } from "../lib/load.js";
import { rssBytes, startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt } from "../lib/report.js";

const MIB = 1024 * 1024;
const WARMUP_REQUESTS = 2_000;
const WORKER_WARMUP_JOBS = 5_000;

export async function memory(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const config = writeConfig(
      slowlaneConfig({
        upstream: backend.url as string,
        servers: [nats.url],
        routes: [{ name: "mem", methods: ["POST"], path: "/work/**", concurrency: 32 }],
      }),
    );
    const proxy = stack.push(await startSlowlane("proxy", config));
    const post = (amount: number) =>
      cannon({ url: `${proxy.url}/work/mem`, durationS: 0, amount, method: "POST", body: BODY_1K, headers: { "content-type": "application/json" }, expectStatus: 202 });

    ctx.log(`memory: proxy accepts ${ctx.jobs} jobs with no workers`);
    await post(WARMUP_REQUESTS);
    await new Promise((r) => setTimeout(r, 1_000));
    const proxyStart = rssBytes(proxy.pid);
    let proxyPeak = proxyStart;
    const sampler = setInterval(() => (proxyPeak = Math.max(proxyPeak, rssBytes(proxy.pid))), 250);
    const accepted = await post(ctx.jobs);
    clearInterval(sampler);
    await new Promise((r) => setTimeout(r, 1_000));
    const proxyEnd = rssBytes(proxy.pid);
    const total = WARMUP_REQUESTS + ctx.jobs;

    ctx.log(`memory: one worker drains ${total} jobs`);
    const { nc, jsm } = await connectHarness([nats.url]);
    stack.defer(() => nc.close());
    const worker = stack.push(await startSlowlane("worker", config));
    const warmFraction = Math.min(0.5, Math.max(0.1, WORKER_WARMUP_JOBS / total));
    let workerWarm: number | undefined;
    let workerPeak = 0;
    const drained = await watchDrain(jsm, "BENCH", "route_mem", total, {
      onSample: (done) => {
        const rss = rssBytes(worker.pid);
        if (workerWarm === undefined && done >= warmFraction) workerWarm = rss;
        if (workerWarm !== undefined) workerPeak = Math.max(workerPeak, rss);
      },
    });
    const workerEnd = rssBytes(worker.pid);
    const warm = workerWarm ?? workerEnd;
    const jobs = ctx.jobs.toLocaleString("en-US");
    return [
      {
        scenario: `proxy memory, ${jobs} jobs queued, no workers (RSS growth)`,
        slowlane: fmt.mib(proxyEnd - proxyStart),
        baseline: "",
        target: "≤ 50 MiB",
        met: proxyEnd - proxyStart <= 50 * MIB,
        note: `RSS ${fmt.mib(proxyStart)} → ${fmt.mib(proxyEnd)}, peak ${fmt.mib(proxyPeak)}; ${accepted.bad} not 202`,
      },
      {
        scenario: `worker memory across ${total.toLocaleString("en-US")} jobs (RSS growth after warm-up)`,
        slowlane: fmt.mib(workerEnd - warm),
        baseline: "",
        target: "≤ 20 MiB",
        met: workerEnd - warm <= 20 * MIB && workerPeak - warm <= 20 * MIB,
        note: `RSS ${fmt.mib(warm)} after ${Math.round(warmFraction * total)} jobs → ${fmt.mib(workerEnd)} at the end, peak ${fmt.mib(workerPeak)}; drained at ${fmt.jobs(drained.jobsPerSec)}`,
      },
    ];
  } finally {
    await stack.close();
  }
}
