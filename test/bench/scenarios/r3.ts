/**
 * R3 vs R1: accept throughput (no workers) and drain rate (one worker, backend latency 0) with
 * `nats.replicas: 3` on a 3-node loopback cluster vs `nats.replicas: 1` on one node. Every node
 * shares this machine's cores, so this shows the cost of replication, not the gain of more machines.
 */
import type { NatsServer } from "../../../scripts/nats-server.js";
import { startNatsCluster } from "../../helpers/nats-cluster.js";
import type { BenchContext } from "../lib/context.js";
import { slowlaneConfig, Stack } from "../lib/context.js";
import { BODY_1K, connectHarness, submitJobs, watchDrain } from "../lib/jobs.js";
import { cannon, med } from "../lib/load.js";
import type { LoadResult } from "../lib/load.js";
import { startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt } from "../lib/report.js";

interface Measured {
  accept: LoadResult[];
  drainJobsPerSec: number;
  replicas: number | undefined;
}

async function measure(ctx: BenchContext, replicas: 1 | 3): Promise<Measured> {
  const stack = new Stack();
  try {
    let servers: readonly string[];
    if (replicas === 1) {
      const nats: NatsServer = await stack.nats();
      servers = [nats.url];
    } else {
      const cluster = await startNatsCluster({ size: 3 });
      stack.defer(() => cluster.close());
      servers = cluster.urls;
    }
    const backend = await stack.baseline("backend");
    const config = writeConfig(
      slowlaneConfig({
        upstream: backend.url as string,
        servers,
        replicas,
        routes: [{ name: "rep", methods: ["POST"], path: "/work/**", concurrency: 32 }],
      }),
    );
    const proxy = stack.push(await startSlowlane("proxy", config));
    const post = (d: number) =>
      cannon({ url: `${proxy.url}/work/r`, durationS: d, method: "POST", body: BODY_1K, headers: { "content-type": "application/json" }, expectStatus: 202 });
    ctx.log(`R${replicas}: accept`);
    await post(ctx.warmupS);
    const accept: LoadResult[] = [];
    for (let i = 0; i < ctx.runs; i++) accept.push(await post(ctx.durationS));

    const { nc, jsm } = await connectHarness(servers);
    stack.defer(() => nc.close());
    const info = await jsm.streams.info("BENCH");
    await jsm.streams.purge("BENCH");
    ctx.log(`R${replicas}: drain ${ctx.drainJobs} jobs`);
    await submitJobs(proxy.url as string, "/work/r", ctx.drainJobs);
    const worker = stack.push(await startSlowlane("worker", config));
    const drained = await watchDrain(jsm, "BENCH", "route_rep", ctx.drainJobs);
    await worker.stop();
    return { accept, drainJobsPerSec: drained.jobsPerSec, replicas: info.config.num_replicas };
  } finally {
    await stack.close();
  }
}

export async function r3(ctx: BenchContext): Promise<Row[]> {
  const one = await measure(ctx, 1);
  const three = await measure(ctx, 3);
  const warn = three.replicas === 3 ? "" : `; stream had ${three.replicas} replica(s): nats.replicas not applied`;
  return [
    {
      scenario: "R3 vs R1 accept req/s (3-node cluster vs one node)",
      slowlane: fmt.rps(med.rps(three.accept)),
      baseline: fmt.rps(med.rps(one.accept)),
      ratio: med.rps(three.accept) / med.rps(one.accept),
      target: "report",
      note: `p99 ${fmt.ms(med.p99(three.accept))} vs ${fmt.ms(med.p99(one.accept))}${warn}`,
    },
    {
      scenario: "R3 vs R1 drain jobs/s (one worker)",
      slowlane: fmt.jobs(three.drainJobsPerSec),
      baseline: fmt.jobs(one.drainJobsPerSec),
      ratio: three.drainJobsPerSec / one.drainJobsPerSec,
      target: "report",
    },
  ];
}
