/**
 * Completion without polling.
 *
 * sse: SSE_CLIENTS (10,000; BENCH_SSE_CLIENTS) jobs are queued on a proxy with no worker, and a
 * client process opens one `Accept: text/event-stream` stream per job on the same proxy. Reported:
 * the proxy's RSS growth from before the streams open to when every stream has its first event,
 * and, once a worker drains the jobs, the delay from each job's final record (its `updatedAt`) to
 * the client reading the final event (p50, p99, max). The proxy watches transitions with one
 * subscription: the waiting streams cost it memory, not NATS work. The baseline is a bare node:http
 * server holding the same number of streams (`baselines/sse.ts`): Node's own cost per open response.
 *
 * wait: the `wait` path's added latency: one request at a time on a route with `wait: 10s`
 * (accept, persist, a worker calls the backend, the record, the event, the replay) against the
 * same request sent to the backend directly.
 */
import { spawn } from "node:child_process";
import { loadavg } from "node:os";
import { join } from "node:path";
import { Pool } from "undici";
import type { BenchContext } from "../lib/context.js";
import { slowlaneConfig, Stack } from "../lib/context.js";
import { percentile } from "../lib/load.js";
import { ROOT, rssBytes, startSlowlane, writeConfig } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt } from "../lib/report.js";

const MIB = 1024 * 1024;
const SSE_CLIENTS_SCRIPT = join(ROOT, "test/bench/sse-clients.ts");

/** The SSE client process: its stdout lines as they come, and a way to wait for one. */
function startClients(stack: Stack, base: string, path: string, count: number) {
  const child = spawn(process.execPath, ["--import", "tsx", SSE_CLIENTS_SCRIPT, base, path, String(count)], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  stack.defer(async () => void child.kill("SIGKILL"));
  const lines: string[] = [];
  let pending = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk: string) => {
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf("\n")) !== -1) {
      lines.push(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
  });
  let exited = false;
  child.on("exit", () => (exited = true));
  return {
    go: () => child.stdin.write("go\n"),
    async line(prefix: string, timeoutMs = 600_000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = lines.find((l) => l.startsWith(prefix));
        if (found) return found.slice(prefix.length);
        if (exited) throw new Error(`the SSE clients exited before "${prefix}"`);
        if (Date.now() > deadline) throw new Error(`no "${prefix}" from the SSE clients within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** RSS growth of process `pid` while `clients` streams open on `base` (jobs submitted to `path` first). */
async function openStreams(stack: Stack, pid: number, base: string, path: string, clients: number) {
  const client = startClients(stack, base, path, clients);
  await client.line("SUBMITTED ", 300_000);
  await new Promise((r) => setTimeout(r, 1_000));
  const before = rssBytes(pid);
  client.go();
  await client.line("CONNECTED ");
  await new Promise((r) => setTimeout(r, 1_000));
  return { client, before, connected: rssBytes(pid) };
}

/** The same streams held by a bare node:http server: what Node itself costs per open response. */
async function bareStreams(ctx: BenchContext, clients: number): Promise<number> {
  const stack = new Stack();
  try {
    const bare = await stack.baseline("sse");
    ctx.log(`sse: ${clients} streams on a bare node:http server`);
    const { before, connected } = await openStreams(stack, bare.pid, bare.url as string, "/work", clients);
    return connected - before;
  } finally {
    await stack.close();
  }
}

export async function sseFanout(ctx: BenchContext, clients: number): Promise<Row[]> {
  const bare = await bareStreams(ctx, clients);
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const config = writeConfig(
      slowlaneConfig({ upstream: backend.url as string, servers: [nats.url], routes: [{ name: "sse", methods: ["POST"], path: "/work/**", concurrency: 32 }] }),
    );
    // A worker first, so the route's consumer exists; then the proxy alone while the streams open.
    await (await startSlowlane("worker", config)).stop();
    const proxy = stack.push(await startSlowlane("proxy", config));
    ctx.log(`sse: ${clients} jobs queued, then ${clients} SSE clients on one proxy`);
    const { client, before, connected } = await openStreams(stack, proxy.pid, proxy.url as string, "/work/sse?ms=100", clients);
    let peak = connected;
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(proxy.pid))), 250);
    stack.defer(async () => clearInterval(sampler));
    ctx.log(`sse: all connected; a worker drains the jobs`);
    stack.push(await startSlowlane("worker", config));
    const done = JSON.parse(await client.line("DONE ")) as { count: number; delays: number[] };
    clearInterval(sampler);
    const p50 = percentile(done.delays, 50);
    const p99 = percentile(done.delays, 99);
    const max = Math.max(...done.delays);
    const n = clients.toLocaleString("en-US");
    return [
      {
        scenario: `SSE fan-out: ${n} waiting clients on one proxy (RSS growth)`,
        slowlane: fmt.mib(connected - before),
        baseline: fmt.mib(bare),
        ratio: (connected - before) / bare,
        target: "≤ 100 MiB",
        met: connected - before <= 100 * MIB,
        note: `RSS ${fmt.mib(before)} → ${fmt.mib(connected)} with every stream open, peak ${fmt.mib(peak)} while they completed; baseline: a bare node:http server holding the same streams`,
      },
      {
        scenario: `SSE fan-out: completion → event delay p99 (${n} streams)`,
        slowlane: fmt.ms(p99),
        baseline: "",
        target: "≤ 50 ms",
        met: p99 <= 50,
        note: `p50 ${fmt.ms(p50)}, max ${fmt.ms(max)}; from the final record's updatedAt to the client reading the event; ${done.count} streams ended; load average ${loadavg()[0]?.toFixed(1)}`,
      },
    ];
  } finally {
    await stack.close();
  }
}

export async function waitLatency(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const config = writeConfig(
      slowlaneConfig({ upstream: backend.url as string, servers: [nats.url], routes: [{ name: "wait", methods: ["POST"], path: "/work/**", wait: "10s" }] }),
    );
    const proxy = stack.push(await startSlowlane("proxy", config));
    stack.push(await startSlowlane("worker", config));
    const viaSlowlane = new Pool(proxy.url as string, { connections: 1 });
    const direct = new Pool(backend.url as string, { connections: 1 });
    stack.defer(() => viaSlowlane.close());
    stack.defer(() => direct.close());

    const time = async (pool: Pool, expect: number): Promise<number> => {
      const started = performance.now();
      const res = await pool.request({ method: "POST", path: "/work/wait", body: "{}", headers: { "content-type": "application/json" } });
      await res.body.dump();
      if (res.statusCode !== expect) throw new Error(`expected ${expect}, got ${res.statusCode}`);
      return performance.now() - started;
    };
    ctx.log(`wait: ${ctx.completions} requests one at a time, through wait and direct, alternating`);
    const slow: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < ctx.completions + 20; i++) {
      const s = await time(viaSlowlane, 200);
      const b = await time(direct, 200);
      // The first few warm the connections and JIT.
      if (i >= 20) {
        slow.push(s);
        bare.push(b);
      }
    }
    const [s50, s99, b50, b99] = [percentile(slow, 50), percentile(slow, 99), percentile(bare, 50), percentile(bare, 99)];
    const note = `added p50 ${fmt.ms(s50 - b50)}, p99 ${fmt.ms(s99 - b99)}; ${slow.length} requests each, backend 0 ms; load average ${loadavg()[0]?.toFixed(1)}`;
    return [
      // The target: the wait path adds at most 5 ms at the median to a direct call.
      {
        key: "wait-p50",
        scenario: "wait path p50 latency (synchronous answer) vs a direct call",
        slowlane: fmt.ms(s50),
        baseline: fmt.ms(b50),
        ratio: s50 / b50,
        target: "added ≤ 5 ms",
        met: s50 - b50 <= 5,
        note,
      },
      { scenario: "wait path p99 latency vs a direct call", slowlane: fmt.ms(s99), baseline: fmt.ms(b99), ratio: s99 / b99, target: "report", met: undefined },
    ];
  } finally {
    await stack.close();
  }
}
