/** Async accept (202): slowlane's proxy vs a minimal publish-and-202 server, 1 KiB bodies, no workers. */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { BenchContext } from "../lib/context.js";
import { profileDir, slowlaneConfig, Stack } from "../lib/context.js";
import { BODY_1K, createBaselineStream } from "../lib/jobs.js";
import { cannon, compare, med, median, us, withCpu } from "../lib/load.js";
import { startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt, ratioRow } from "../lib/report.js";

export async function accept(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const nc = await connect({ servers: nats.url });
    stack.defer(() => nc.close());
    await createBaselineStream(await jetstreamManager(nc), "BASEACC");
    const backend = await stack.baseline("backend");
    const bare = await stack.baseline("accept", { NATS_URL: nats.url, STREAM: "BASEACC" });
    const config = writeConfig(
      slowlaneConfig({ upstream: backend.url as string, servers: [nats.url], routes: [{ name: "work", methods: ["POST"], path: "/work/**" }] }),
    );
    const slowlane = stack.push(await startSlowlane("proxy", config, { profileDir: profileDir(ctx, "accept-proxy") }));
    const post = (url: string) => (d?: number) =>
      cannon({
        url: `${url}/work/report`,
        durationS: d ?? ctx.durationS,
        method: "POST",
        body: BODY_1K,
        headers: { "content-type": "application/json" },
        expectStatus: 202,
      });
    ctx.log("accept: slowlane vs minimal accept server");
    const cpu = { slowlane: [] as number[], bare: [] as number[] };
    const { a, b } = await compare(
      ctx.runs,
      ctx.warmupS,
      withCpu([slowlane.pid], post(slowlane.url as string), cpu.slowlane),
      withCpu([bare.pid], post(bare.url as string), cpu.bare),
    );
    const bad = med.bad(a) + med.bad(b);
    const note = bad ? `${bad} answers were not 202` : undefined;
    return [
      { ...ratioRow("async accept (202) req/s vs minimal publish-and-202 server", med.rps(a), med.rps(b), fmt.rps, { atLeast: 0.95 }, note), key: "accept" },
      ratioRow("async accept p99 latency", med.p99(a), med.p99(b), fmt.ms, { atMost: 1.5 }),
      {
        scenario: "async accept CPU per request vs minimal publish-and-202 server",
        slowlane: us(median(cpu.slowlane)),
        baseline: us(median(cpu.bare)),
        ratio: median(cpu.slowlane) / median(cpu.bare),
        target: "report",
        note: "proxy process user + system time (nats-server not included)",
      },
    ];
  } finally {
    await stack.close();
  }
}
