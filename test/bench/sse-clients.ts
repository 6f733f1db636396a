/**
 * Many waiting SSE clients, in a process of their own: submits COUNT jobs to BASE+PATH (202 each),
 * opens one `Accept: text/event-stream` request per job on its status URL, and reports on stdout:
 *   SUBMITTED <count>                      every job is queued; waits for a line on stdin to go on
 *   CONNECTED <count>                      every stream has its first event (the job is queued)
 *   DONE <json>                            every stream has its final event and has ended:
 *                                          { count, delays: [ms, …] } where a delay is the time from
 *                                          the final record's updatedAt to this process reading the event
 * Both clocks are the same machine's wall clock (performance.timeOrigin + now, Date for updatedAt).
 *   tsx test/bench/sse-clients.ts BASE PATH COUNT
 */
import { Agent, request } from "node:http";

const [base, path, countArg] = process.argv.slice(2);
if (!base || !path || !countArg) {
  console.error("usage: sse-clients.ts BASE PATH COUNT");
  process.exit(2);
}
const count = Number(countArg);
const now = () => performance.timeOrigin + performance.now();
const submitAgent = new Agent({ keepAlive: true, maxSockets: 64 });

function submit(): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method: "POST", agent: submitAgent, headers: { "content-type": "application/json" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => (res.statusCode === 202 ? resolve((JSON.parse(body) as { statusUrl: string }).statusUrl) : reject(new Error(`submit: ${res.statusCode} ${body}`))));
    });
    req.on("error", reject);
    req.end("{}");
  });
}

/** Opens one stream; `onFirst` at its first event, resolves with the final event's delay when it ends. */
function stream(statusUrl: string, onFirst: () => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let first = true;
    let finalDelay: number | undefined;
    const req = request(`${base}${statusUrl}`, { agent: false, headers: { accept: "text/event-stream" } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream: ${res.statusCode}`));
      let pending = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        const at = now();
        pending += chunk;
        let end: number;
        while ((end = pending.indexOf("\n\n")) !== -1) {
          const frame = pending.slice(0, end);
          pending = pending.slice(end + 2);
          const data = frame.split("\n").find((l) => l.startsWith("data: "));
          if (!data) continue;
          const body = JSON.parse(data.slice(6)) as { status: string; updatedAt: string };
          if (first) {
            first = false;
            onFirst();
          }
          if (body.status === "completed" || body.status === "failed") finalDelay = at - Date.parse(body.updatedAt);
        }
      });
      res.on("end", () => (finalDelay === undefined ? reject(new Error("stream ended without a final event")) : resolve(finalDelay)));
    });
    req.on("error", reject);
    req.end();
  });
}

const urls: string[] = [];
for (let i = 0; i < count; i += 256) urls.push(...(await Promise.all(Array.from({ length: Math.min(256, count - i) }, submit))));
submitAgent.destroy();
console.log(`SUBMITTED ${urls.length}`);
await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));

let connected = 0;
const finals: Promise<number>[] = [];
// In batches, so the proxy's listen backlog is never overrun.
for (let i = 0; i < urls.length; i += 500) {
  const batch = urls.slice(i, i + 500);
  const firsts = batch.map(
    (url) =>
      new Promise<void>((resolve, reject) => {
        const done = stream(url, () => {
          connected += 1;
          resolve();
        });
        done.catch(reject);
        finals.push(done);
      }),
  );
  await Promise.all(firsts);
}
console.log(`CONNECTED ${connected}`);
const delays = await Promise.all(finals);
console.log(`DONE ${JSON.stringify({ count: delays.length, delays })}`);
process.exit(0);
