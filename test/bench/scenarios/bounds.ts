/**
 * Memory under slow and hostile clients: the proxy's peak RSS (what the 256 MiB container limit
 * of deploy/ sees) against a 200 MiB target, and whether it answered `/healthz` throughout (every
 * probe, every 250 ms, answered 200), with how many answers came within the liveness probe's 2 s. Three scenarios, each with a fresh proxy process on the default
 * limits (`server.maxInflightBodySize` 64 MiB, `server.maxConnections` 10,000):
 *
 *  - 50 clients ask for a 32 MiB result and stop reading; meanwhile one more reads all of it;
 *  - BENCH_UPLOADS (200) clients upload 900 KiB each at once, in 1-byte chunks (chunked encoding: each byte is a
 *    Buffer of its own at the proxy); the body budget lets as many in as it holds and answers the
 *    rest 503 at once, which the note counts;
 *  - BENCH_JOBS (100,000) polls of random, well-formed, unknown job ids.
 */
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { connect } from "node:net";
import type { Socket } from "node:net";
import { join } from "node:path";
import type { BenchContext } from "../lib/context.js";
import { slowlaneConfig, Stack } from "../lib/context.js";
import { cannonIds } from "../lib/load.js";
import { startSlowlane, WORK_DIR, writeConfig } from "../lib/procs.js";
import type { SlowlaneProc } from "../lib/procs.js";
import type { Row } from "../lib/report.js";
import { fmt } from "../lib/report.js";
import { watchProcess } from "../lib/watch.js";
import type { WatchResult } from "../lib/watch.js";

const MIB = 1024 * 1024;
const KIB = 1024;
const JOBS = "/_slowlane/jobs/";
const TARGET_BYTES = 200 * MIB;
const RESULT_BYTES = 32 * MIB;
const STALLED_CLIENTS = 50;
const UPLOAD_BYTES = 900 * KIB;
/** How long the stalled clients hold their connections. */
const STALL_S = 10;

function row(scenario: string, watched: WatchResult, note: string): Row {
  const answered = watched.probes - watched.failedProbes;
  return {
    scenario,
    slowlane: fmt.mib(watched.peakRss),
    baseline: "",
    target: "< 200 MiB, /healthz answered throughout",
    met: watched.peakRss < TARGET_BYTES && watched.failedProbes === 0,
    note:
      `RSS ${fmt.mib(watched.startRss)} before; /healthz answered ${answered}/${watched.probes}, ` +
      `${answered - watched.slowProbes} within the liveness probe's 2 s (slowest ${fmt.ms(watched.slowestProbeMs)}); ${note}`,
  };
}

/** Opens a connection, sends `head` and whatever `body` is, and resolves once the server closes it. */
async function rawExchange(url: string, parts: readonly Buffer[], paused = false): Promise<{ socket: Socket; answer: Promise<string> }> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on("error", () => undefined);
  await once(socket, "connect");
  const chunks: Buffer[] = [];
  if (!paused) socket.on("data", (c: Buffer) => chunks.push(c));
  else socket.pause();
  for (const part of parts) socket.write(part);
  // Not once(): it rejects on "error", and a refused upload's writes fail (EPIPE) once the server closes.
  const answer = new Promise<string>((resolve) => socket.once("close", () => resolve(Buffer.concat(chunks).toString("latin1"))));
  return { socket, answer };
}

async function finishedJob(proxy: string, path: string): Promise<string> {
  const accepted = await fetch(`${proxy}${path}`);
  if (accepted.status !== 202) throw new Error(`accept answered ${accepted.status}`);
  const { id } = (await accepted.json()) as { id: string };
  for (const deadline = Date.now() + 120_000; Date.now() < deadline; ) {
    const status = await fetch(`${proxy}${JOBS}${id}`, { redirect: "manual" });
    await status.arrayBuffer();
    if (status.status === 303) return id;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`job ${id} did not finish`);
}

async function stalledResults(ctx: BenchContext, config: string): Promise<Row> {
  const proxy = await startSlowlane("proxy", config);
  try {
    const worker = await startSlowlane("worker", config);
    const id = await finishedJob(proxy.url as string, `/big?bytes=${RESULT_BYTES}`);
    await worker.stop();
    const holdMs = STALL_S * 1000;
    ctx.log(`bounds: ${STALLED_CLIENTS} clients stall on a 32 MiB result for ${holdMs / 1000} s`);
    const watch = watchProcess(proxy);
    const request = Buffer.from(`GET ${JOBS}${id}/result HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n`);
    const stalled = await Promise.all(Array.from({ length: STALLED_CLIENTS }, () => rawExchange(proxy.url as string, [request], true)));
    const started = performance.now();
    const whole = await fetch(`${proxy.url}${JOBS}${id}/result`).then((r) => r.arrayBuffer());
    const readS = (performance.now() - started) / 1000;
    await new Promise((r) => setTimeout(r, Math.max(0, holdMs - (performance.now() - started))));
    for (const { socket } of stalled) socket.destroy();
    const watched = await watch.stop();
    const read = whole.byteLength === RESULT_BYTES ? `all 32 MiB in ${readS.toFixed(1)} s` : `only ${whole.byteLength} bytes`;
    return row(`proxy peak RSS, ${STALLED_CLIENTS} clients stalled on a 32 MiB result`, watched, `another client read ${read}`);
  } finally {
    await proxy.stop();
  }
}

/** A chunked request whose body is `bytes` bytes in 1-byte chunks. */
function oneByteUpload(bytes: number): Buffer[] {
  const head = Buffer.from("POST /upload/one-byte HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
  const body = Buffer.alloc(bytes * 6);
  for (let i = 0; i < bytes; i++) body.write("1\r\nx\r\n", i * 6, "latin1");
  return [head, body, Buffer.from("0\r\n\r\n")];
}

async function oneByteUploads(ctx: BenchContext, config: string, uploads: number): Promise<Row> {
  const proxy = await startSlowlane("proxy", config);
  try {
    ctx.log(`bounds: ${uploads} concurrent 900 KiB uploads in 1-byte chunks`);
    const parts = oneByteUpload(UPLOAD_BYTES);
    const watch = watchProcess(proxy);
    const started = performance.now();
    const exchanges = await Promise.all(Array.from({ length: uploads }, () => rawExchange(proxy.url as string, parts)));
    const answers = await Promise.all(exchanges.map((e) => e.answer));
    const tookS = (performance.now() - started) / 1000;
    const watched = await watch.stop();
    const counts = new Map<string, number>();
    for (const answer of answers) {
      const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? "closed without an answer";
      counts.set(status, (counts.get(status) ?? 0) + 1);
    }
    const statuses = [...counts].sort().map(([status, n]) => `${n} × ${status}`).join(", ");
    return row(`proxy peak RSS, ${uploads} concurrent 900 KiB uploads in 1-byte chunks`, watched, `${statuses} (503: body budget full) in ${tookS.toFixed(0)} s`);
  } finally {
    await proxy.stop();
  }
}

async function unknownPolls(ctx: BenchContext, config: string): Promise<Row> {
  const proxy: SlowlaneProc = await startSlowlane("proxy", config);
  try {
    ctx.log(`bounds: ${ctx.jobs} polls of random unknown ids`);
    const idsFile = join(WORK_DIR, "unknown-ids.txt");
    writeFileSync(idsFile, Array.from({ length: ctx.jobs }, () => randomBytes(16).toString("base64url")).join("\n"));
    const watch = watchProcess(proxy);
    const load = await cannonIds({ base: proxy.url as string, prefix: JOBS, idsFile, durationS: 0, amount: ctx.jobs, expectStatus: 404 });
    const watched = await watch.stop();
    const polls = ctx.jobs.toLocaleString("en-US");
    return row(`proxy peak RSS, ${polls} polls of random unknown ids`, watched, `${fmt.rps(load.reqPerSec)}, ${load.bad} not 404`);
  } finally {
    await proxy.stop();
  }
}

export async function bounds(ctx: BenchContext): Promise<Row[]> {
  const stack = new Stack();
  try {
    const nats = await stack.nats();
    const backend = await stack.baseline("backend");
    const config = writeConfig(
      slowlaneConfig({
        upstream: backend.url as string,
        servers: [nats.url],
        routes: [
          { name: "big", methods: ["GET"], path: "/big" },
          { name: "upload", methods: ["POST"], path: "/upload/**" },
        ],
      }),
    );
    // BENCH_BOUNDS=stall,uploads,polls picks some of the three (default all).
    const only = (process.env.BENCH_BOUNDS ?? "stall,uploads,polls").split(",");
    const rows: Row[] = [];
    if (only.includes("stall")) rows.push(await stalledResults(ctx, config));
    if (only.includes("uploads")) rows.push(await oneByteUploads(ctx, config, ctx.uploads));
    if (only.includes("polls")) rows.push(await unknownPolls(ctx, config));
    return rows;
  } finally {
    await stack.close();
  }
}
