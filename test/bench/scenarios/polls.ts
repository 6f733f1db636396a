/**
 * Status polls of finished jobs. Cache hit: one finished job polled on the proxy that has cached it,
 * vs a bare server answering a fixed 1 KiB body. Cache miss: a second proxy replica polls
 * `pollIds` finished jobs round robin (more than its LRU's 10 000 entries, so it rarely hits),
 * vs a bare KV get of the same job records behind a bare http server.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { BenchContext } from "../lib/context.js";
import { profileDir, slowlaneConfig, Stack } from "../lib/context.js";
import { connectHarness, submitJobs, watchDrain } from "../lib/jobs.js";
import { cannon, cannonIds, compare, med, median, us, withCpu } from "../lib/load.js";
import { startSlowlane, WORK_DIR, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt, ratioRow } from "../lib/report.js";

const JOBS = "/_slowlane/jobs/";

export async function polls(ctx: BenchContext, which: { hit: boolean; miss: boolean }): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const config = writeConfig(
      slowlaneConfig({
        upstream: backend.url as string,
        servers: [nats.url],
        routes: [{ name: "poll", methods: ["POST"], path: "/work/**", concurrency: 64 }],
      }),
    );
    const proxyA = stack.push(await startSlowlane("proxy", config, { profileDir: profileDir(ctx, "poll-hit-proxy") }));
    const count = which.miss ? ctx.pollIds : 1;
    ctx.log(`polls: submitting and finishing ${count} jobs`);
    const ids = await submitJobs(proxyA.url as string, "/work/poll", count);
    const worker = stack.push(await startSlowlane("worker", config));
    const { nc, jsm } = await connectHarness([nats.url]);
    stack.defer(() => nc.close());
    await watchDrain(jsm, "BENCH", "route_poll", count);
    await worker.stop();
    const rows: Row[] = [];

    if (which.hit) {
      const fixed = await stack.baseline("fixed");
      const hit = (d?: number) => cannon({ url: `${proxyA.url}${JOBS}${ids[0]}`, durationS: d ?? ctx.durationS, expectStatus: 303 });
      const bare = (d?: number) => cannon({ url: `${fixed.url}/`, durationS: d ?? ctx.durationS });
      ctx.log("poll-hit: slowlane (cached finished job) vs bare fixed-body server");
      const cpu = { slowlane: [] as number[], bare: [] as number[] };
      const { a, b } = await compare(ctx.runs, ctx.warmupS, withCpu([proxyA.pid], hit, cpu.slowlane), withCpu([fixed.pid], bare, cpu.bare));
      const bad = med.bad(a) + med.bad(b);
      rows.push({
        ...ratioRow("status poll, cache hit, req/s vs bare fixed-body server", med.rps(a), med.rps(b), fmt.rps, { atLeast: 0.9 },
          bad ? `${bad} unexpected answers` : undefined),
        key: "poll-hit",
      }, {
        scenario: "status poll, cache hit, CPU per request vs bare fixed-body server",
        slowlane: us(median(cpu.slowlane)),
        baseline: us(median(cpu.bare)),
        ratio: median(cpu.slowlane) / median(cpu.bare),
        target: "report",
        note: "server process user + system time",
      });
    }

    if (which.miss) {
      const idsFile = join(WORK_DIR, "poll-ids.txt");
      writeFileSync(idsFile, ids.join("\n"));
      const proxyB = stack.push(await startSlowlane("proxy", config, { profileDir: profileDir(ctx, "poll-miss-proxy") }));
      const kvGet = await stack.baseline("kv-get", { NATS_URL: nats.url, BUCKET: "BENCH_jobs" });
      const miss = (d?: number) =>
        cannonIds({ base: proxyB.url as string, prefix: JOBS, idsFile, durationS: d ?? ctx.durationS, expectStatus: 303 });
      const bare = (d?: number) =>
        cannonIds({ base: kvGet.url as string, prefix: "/kv/", idsFile, durationS: d ?? ctx.durationS, expectStatus: 200 });
      ctx.log(`poll-miss: second proxy replica, ${ids.length} finished jobs round robin, vs bare KV get`);
      const { a, b } = await compare(ctx.runs, ctx.warmupS, miss, bare);
      const bad = med.bad(a) + med.bad(b);
      rows.push(
        ratioRow("status poll, cache miss (other replica), req/s vs bare KV get", med.rps(a), med.rps(b), fmt.rps, { atLeast: 0.7 },
          `${ids.length.toLocaleString("en-US")} ids round robin${bad ? `; ${bad} unexpected answers` : ""}`),
      );
    }
    return rows;
  } finally {
    await stack.close();
  }
}
