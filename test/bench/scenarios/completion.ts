/**
 * Completion overhead: from the backend handing its answer to the kernel to the first status poll
 * that sees "completed" (303), one job at a time, proxy and worker in separate processes. Both
 * timestamps are wall-clock (performance.timeOrigin + now) in processes of the same machine.
 */
import { Pool } from "undici";
import type { BenchContext } from "../lib/context.js";
import { slowlaneConfig, Stack } from "../lib/context.js";
import { percentile } from "../lib/load.js";
import { startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt } from "../lib/report.js";

const now = () => performance.timeOrigin + performance.now();

export async function completion(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const config = writeConfig(
      slowlaneConfig({ upstream: backend.url as string, servers: [nats.url], routes: [{ name: "comp", methods: ["POST"], path: "/work/**" }] }),
    );
    const proxy = stack.push(await startSlowlane("proxy", config));
    stack.push(await startSlowlane("worker", config));
    const pool = new Pool(proxy.url as string, { connections: 1 });
    stack.defer(() => pool.close());

    const overheads: number[] = [];
    const pollRtts: number[] = [];
    ctx.log(`completion overhead: ${ctx.completions} jobs, one at a time`);
    for (let i = 0; i < ctx.completions + 5; i++) {
      const tag = `c${i}`;
      const res = await pool.request({ method: "POST", path: `/work/comp?tag=${tag}`, body: "{}" });
      const { id } = (await res.body.json()) as { id: string };
      let seen: number | undefined;
      while (seen === undefined) {
        const sent = now();
        const poll = await pool.request({ method: "GET", path: `/_slowlane/jobs/${id}` });
        await poll.body.dump();
        const at = now();
        pollRtts.push(at - sent);
        if (poll.statusCode === 303) seen = at;
      }
      const answered = await waitAnswered(backend.lines, tag);
      // The first few warm the connections and JIT.
      if (i >= 5) overheads.push(seen - answered);
    }
    const p50 = percentile(overheads, 50);
    const p99 = percentile(overheads, 99);
    const note = `${overheads.length} jobs; one status poll takes ${fmt.ms(percentile(pollRtts, 50))} (p50)`;
    return [
      { scenario: "completion overhead p50 (backend answer → completed visible)", slowlane: fmt.ms(p50), baseline: "", ratio: undefined, target: "≤ 5 ms", met: p50 <= 5, note },
      { scenario: "completion overhead p99", slowlane: fmt.ms(p99), baseline: "", ratio: undefined, target: "≤ 25 ms", met: p99 <= 25 },
    ];
  } finally {
    await stack.close();
  }
}

async function waitAnswered(lines: string[], tag: string): Promise<number> {
  const prefix = `ANSWERED ${tag} `;
  for (let i = 0; i < 500; i++) {
    const line = lines.find((l) => l.startsWith(prefix));
    if (line) return Number(line.slice(prefix.length));
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`the backend never logged its answer for ${tag}`);
}
