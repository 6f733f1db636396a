/**
 * A private nats-server cluster with JetStream on loopback, for the scale-out test and the R3
 * benchmark: N nodes (default 3), each with its own client, monitoring and cluster port and its
 * own store dir, routed to each other (`--cluster`, `--routes`, `--server_name`, `--cluster_name`).
 *
 * Ready means every node has its routes to all the others and agrees on a JetStream meta leader
 * (`/jsz`), and answers `/healthz` with 200. nats-server 2.9 elects the meta leader a few seconds
 * after the routes come up; until then stream creation fails, so callers wait for this.
 */
import { request } from "node:http";
import { getFreePort, startNatsServer } from "../../scripts/nats-server.js";
import type { NatsServer } from "../../scripts/nats-server.js";

const HOST = "127.0.0.1";
const DEFAULT_READY_TIMEOUT_MS = 30_000;

export interface NatsClusterOptions {
  /** Number of nodes. Default 3. */
  size?: number;
  /** Cluster name. Default `c`. */
  name?: string;
  /** How long to wait for routes and a meta leader, in ms. Default 30 000. */
  readyTimeoutMs?: number;
}

export interface NatsCluster {
  readonly nodes: readonly NatsServer[];
  /** Client URLs of every node, in node order. */
  readonly urls: readonly string[];
  /** Server names, `n1`…`nN`. */
  readonly names: readonly string[];
  /** Resolves once every running node sees the others and a JetStream meta leader. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** The server name of the current JetStream meta leader, as node `index` (default: first running) reports it. */
  metaLeader(): Promise<string | undefined>;
  /** Stops every node and removes their store dirs. */
  close(): Promise<void>;
}

/** GET a monitoring endpoint; `undefined` on any failure. No keep-alive, so no handle lingers. */
export function getMonitorJson<T>(monitorUrl: string, path: string): Promise<{ status: number; body: T } | undefined> {
  return new Promise((resolve) => {
    const req = request(`${monitorUrl}${path}`, { agent: false, timeout: 2_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as T });
        } catch {
          resolve(undefined);
        }
      });
      res.on("error", () => resolve(undefined));
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolve(undefined));
    req.end();
  });
}

interface Jsz {
  meta_cluster?: { leader?: string; cluster_size?: number };
}
interface Routez {
  num_routes?: number;
}

/**
 * Starts an N-node cluster and waits until it is ready (routes up, meta leader elected).
 * @throws with the nodes' output when they do not become ready in time.
 */
export async function startNatsCluster(opts: NatsClusterOptions = {}): Promise<NatsCluster> {
  const size = opts.size ?? 3;
  const clusterName = opts.name ?? "c";
  const clusterPorts = await Promise.all(Array.from({ length: size }, () => getFreePort()));
  const names = clusterPorts.map((_, i) => `n${i + 1}`);

  const started = await Promise.allSettled(
    clusterPorts.map((port, i) => {
      const routes = clusterPorts.filter((_, j) => j !== i).map((p) => `nats://${HOST}:${p}`);
      return startNatsServer({
        args: [
          "--server_name", names[i] as string,
          "--cluster_name", clusterName,
          "--cluster", `nats://${HOST}:${port}`,
          "--routes", routes.join(","),
        ],
        startTimeoutMs: 20_000,
      });
    }),
  );
  const nodes = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    await Promise.all(nodes.map((n) => n.close()));
    throw failed.reason;
  }

  async function nodeReady(node: NatsServer, running: number): Promise<boolean> {
    const [routez, jsz, health] = await Promise.all([
      getMonitorJson<Routez>(node.monitorUrl, "/routez"),
      getMonitorJson<Jsz>(node.monitorUrl, "/jsz"),
      getMonitorJson<unknown>(node.monitorUrl, "/healthz"),
    ]);
    return (
      (routez?.body.num_routes ?? 0) >= running - 1 &&
      Boolean(jsz?.body.meta_cluster?.leader) &&
      health?.status === 200
    );
  }

  const cluster: NatsCluster = {
    nodes,
    urls: nodes.map((n) => n.url),
    names,
    async waitReady(timeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const live = nodes.filter((n) => n.pid !== undefined);
        const ready = await Promise.all(live.map((n) => nodeReady(n, live.length)));
        if (ready.every(Boolean)) return;
        if (Date.now() > deadline) {
          const out = nodes.map((n, i) => `--- ${names[i]} ---\n${n.output()}`).join("\n");
          throw new Error(`nats cluster not ready within ${timeoutMs} ms (routes, meta leader, /healthz):\n${out}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async metaLeader() {
      for (const node of nodes) {
        if (node.pid === undefined) continue;
        const jsz = await getMonitorJson<Jsz>(node.monitorUrl, "/jsz");
        if (jsz?.body.meta_cluster?.leader) return jsz.body.meta_cluster.leader;
      }
      return undefined;
    },
    async close() {
      await Promise.all(nodes.map((n) => n.close()));
    },
  };
  try {
    await cluster.waitReady();
  } catch (err) {
    await cluster.close();
    throw err;
  }
  return cluster;
}
