/**
 * Passthrough: GET through slowlane's proxy vs two bare proxies in front of the same bare backend,
 * measured in the same run: a bare undici Pool proxy (the ceiling: what slowlane's passthrough is
 * built on) and a bare http-proxy-3 with a keep-alive agent (what it was built on before). Besides
 * req/s and p99, each proxy's CPU time per request is reported: on a machine shared with other
 * work it is the steadier figure.
 */
import type { BenchContext } from "../lib/context.js";
import { slowlaneConfig, Stack, profileDir } from "../lib/context.js";
import { cannon, compareMany, med, median, us, withCpu } from "../lib/load.js";
import type { LoadResult } from "../lib/load.js";
import { startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt, ratioRow } from "../lib/report.js";

/** A load run of GETs through the proxy at `url`. */
function get(url: string, durationS: number) {
  return (d?: number): Promise<LoadResult> => cannon({ url: `${url}/items/42`, durationS: d ?? durationS });
}

export async function passthrough(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const undici = await stack.baseline("undici-proxy", { UPSTREAM: backend.url });
    const httpProxy = await stack.baseline("proxy", { UPSTREAM: backend.url });
    const config = writeConfig(
      slowlaneConfig({ upstream: backend.url as string, servers: [nats.url], routes: [{ name: "work", methods: ["POST"], path: "/work/**" }] }),
    );
    const slowlane = stack.push(await startSlowlane("proxy", config, { profileDir: profileDir(ctx, "passthrough-proxy") }));
    const cpu = { slowlane: [] as number[], undici: [] as number[], httpProxy: [] as number[] };
    ctx.log("passthrough: slowlane vs bare undici Pool proxy vs bare http-proxy-3");
    const r = await compareMany(ctx.runs, ctx.warmupS, {
      slowlane: withCpu([slowlane.pid], get(slowlane.url as string, ctx.durationS), cpu.slowlane),
      undici: withCpu([undici.pid], get(undici.url as string, ctx.durationS), cpu.undici),
      httpProxy: withCpu([httpProxy.pid], get(httpProxy.url as string, ctx.durationS), cpu.httpProxy),
    });
    const direct: number[] = [];
    for (let i = 0; i < ctx.runs; i++) direct.push((await cannon({ url: `${backend.url}/items/42`, durationS: ctx.durationS })).reqPerSec);
    const bad = med.bad(r.slowlane) + med.bad(r.undici) + med.bad(r.httpProxy);
    const note = `bare backend direct ${fmt.rps(median(direct))}${bad ? `; ${bad} bad answers` : ""}`;
    return [
      { ...ratioRow("passthrough req/s vs bare undici Pool proxy", med.rps(r.slowlane), med.rps(r.undici), fmt.rps, { atLeast: 0.9 }, note), key: "passthrough-undici" },
      { ...ratioRow("passthrough p99 latency vs bare undici Pool proxy", med.p99(r.slowlane), med.p99(r.undici), fmt.ms, { atMost: 1.2 }), key: "passthrough-undici-p99" },
      { ...ratioRow("passthrough req/s vs bare http-proxy-3", med.rps(r.slowlane), med.rps(r.httpProxy), fmt.rps, { atLeast: 1.3 }), key: "passthrough-http-proxy" },
      ratioRow("passthrough p99 latency vs bare http-proxy-3", med.p99(r.slowlane), med.p99(r.httpProxy), fmt.ms, { atMost: 1.2 }),
      {
        ...ratioRow("passthrough CPU per request vs bare undici Pool proxy", median(cpu.slowlane), median(cpu.undici), us, { atMost: 1.2 }),
        note: `bare http-proxy-3 ${us(median(cpu.httpProxy))}; proxy process user + system time`,
      },
    ];
  } finally {
    await stack.close();
  }
}
