/** Passthrough: GET through slowlane's proxy vs a bare http-proxy-3, both in front of the bare backend. */
import type { BenchContext } from "../lib/context.js";
import { slowlaneConfig, Stack, profileDir } from "../lib/context.js";
import { cannon, compare, med, median } from "../lib/load.js";
import { startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt, ratioRow } from "../lib/report.js";

export async function passthrough(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const bare = await stack.baseline("proxy", { UPSTREAM: backend.url });
    const config = writeConfig(
      slowlaneConfig({ upstream: backend.url as string, servers: [nats.url], routes: [{ name: "work", methods: ["POST"], path: "/work/**" }] }),
    );
    const slowlane = stack.push(await startSlowlane("proxy", config, { profileDir: profileDir(ctx, "passthrough-proxy") }));
    const get = (url: string) => (d?: number) => cannon({ url: `${url}/items/42`, durationS: d ?? ctx.durationS });
    ctx.log("passthrough: slowlane vs bare http-proxy-3");
    const { a, b } = await compare(ctx.runs, ctx.warmupS, get(slowlane.url as string), get(bare.url as string));
    const direct: number[] = [];
    for (let i = 0; i < ctx.runs; i++) direct.push((await get(backend.url as string)()).reqPerSec);
    const bad = med.bad(a) + med.bad(b);
    const note = `bare backend direct ${fmt.rps(median(direct))}${bad ? `; ${bad} bad answers` : ""}`;
    return [
      ratioRow("passthrough req/s vs bare http-proxy-3", med.rps(a), med.rps(b), fmt.rps, { atLeast: 0.95 }, note),
      ratioRow("passthrough p99 latency", med.p99(a), med.p99(b), fmt.ms, { atMost: 1.2 }),
    ];
  } finally {
    await stack.close();
  }
}
