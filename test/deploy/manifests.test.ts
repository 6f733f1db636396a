/**
 * deploy/ checked offline: every Kubernetes manifest against the Kubernetes schemas (kubernetes-models, unknown
 * fields included), both kustomizations rendered, and everything that must agree with the code checked against
 * the code itself: ports and probe paths against the config loader's defaults, container args against the CLI's
 * commands, env vars against what src/ reads, the Dockerfile against package.json and the build, the Grafana
 * dashboard against the metrics contract below, the NATS setup against slowlane.yaml: the NATS login (a password
 * from a Secret, the one the documented command makes, mounted where nats.auth reads it, and required by both NATS
 * setups) and a NATS NetworkPolicy that admits only the namespaces that run slowlane.
 *
 * The contract checks are plain functions that throw; the last block feeds them broken copies to show that
 * each one can fail.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import { Roles } from "../../src/app.js";
import { parseConfig, parseDuration } from "../../src/config/index.js";
import type { Config } from "../../src/config/index.js";
import { isInContext, parseDockerfile } from "./dockerfile.js";
import { validateObject, validatePatch } from "./k8s-schema.js";
import type { K8sObject } from "./k8s-schema.js";
import { podContainers, readManifests, renderKustomization, splitImage } from "./kustomize.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const DEPLOY = join(ROOT, "deploy");
const KUSTOMIZATIONS = ["deploy/kubernetes/base", "deploy/kubernetes/overlays/example"];
const HELM_VALUES = "deploy/nats/values.yaml";
const CONFIG_KEY = "slowlane.yaml";

// ---- the metrics contract --------------------------------------------------------------------------------------

/**
 * Every metric slowlane exposes on the admin port's /metrics, with its labels: the only names the Grafana
 * dashboard may use. Besides these, prom-client's default metrics (`process_*`, `nodejs_*`).
 */
const METRICS: Readonly<Record<string, readonly string[]>> = {
  slowlane_http_requests_total: ["route", "mode", "status"],
  slowlane_accept_duration_seconds: ["route"],
  slowlane_jobs_accepted_total: ["route"],
  slowlane_jobs_finished_total: ["route", "status"],
  slowlane_jobs_running: ["route"],
  slowlane_queue_pending: ["route"],
  slowlane_queue_in_flight: ["route"],
  slowlane_backend_call_duration_seconds: ["route", "status"],
  slowlane_backend_attempts_total: ["route", "outcome"],
  slowlane_redeliveries_total: ["route"],
  slowlane_result_cache_hits_total: [],
  slowlane_result_cache_misses_total: [],
  slowlane_config_reloads_total: ["result"],
  slowlane_nats_connected: [],
};
const HISTOGRAMS = new Set(["slowlane_accept_duration_seconds", "slowlane_backend_call_duration_seconds"]);
const DEFAULT_METRIC_PREFIXES = ["process_", "nodejs_"];
/** Labels Prometheus adds to every scraped series (the kubernetes-pods scrape job). */
const TARGET_LABELS = ["job", "instance", "namespace", "pod"];

// ---- facts read from the code --------------------------------------------------------------------------------

/** slowlane's commands, from the CLI's usage text (which must list every role of src/app.ts). */
function cliCommands(): string[] {
  const usage = readFileSync(join(ROOT, "src/cli.ts"), "utf8");
  const block = /^commands:\n((?: {2}\w+ .*\n)+)/m.exec(usage)?.[1] ?? "";
  return [...block.matchAll(/^ {2}(\w+) /gm)].map((m) => m[1] as string);
}

/** Environment variables slowlane reads (src/, without the dev tools in src/dev). */
function envVarsReadByCode(): Set<string> {
  const names = new Set<string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (path !== join(ROOT, "src/dev")) walk(path);
      } else if (entry.name.endsWith(".ts")) {
        const text = readFileSync(path, "utf8");
        for (const m of text.matchAll(/\benv\??\.([A-Z][A-Z0-9_]*)\b|\benv\[["']([A-Z][A-Z0-9_]*)["']\]/g)) {
          names.add((m[1] ?? m[2]) as string);
        }
      }
    }
  };
  walk(join(ROOT, "src"));
  return names;
}

const DOCKERFILE = readFileSync(join(DEPLOY, "Dockerfile"), "utf8");

/** The numeric user the image runs as (`USER 10001:10001`). */
function imageUid(): number {
  const user = parseDockerfile(DOCKERFILE).at(-1)?.instructions.findLast((i) => i.keyword === "USER")?.text;
  return Number(user?.split(":")[0]);
}

// ---- helpers -------------------------------------------------------------------------------------------------

interface Port {
  name?: string;
  containerPort: number;
}
interface Probe {
  httpGet?: { path: string; port: string | number };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  restartPolicy?: string;
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  ports?: Port[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  lifecycle?: { preStop?: { sleep?: { seconds: number } } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: SecurityContext;
  volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
}
interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  capabilities?: { drop?: string[] };
  seccompProfile?: { type: string };
}
interface PodSpec {
  initContainers?: Container[];
  containers: Container[];
  hostAliases?: { ip: string; hostnames: string[] }[];
  terminationGracePeriodSeconds?: number;
  securityContext?: SecurityContext;
  volumes?: {
    name: string;
    configMap?: { name: string; items?: { key: string; path: string }[] };
    secret?: { secretName: string; optional?: boolean; items?: { key: string; path: string }[] };
    emptyDir?: object;
  }[];
}
interface Workload extends K8sObject {
  spec: { template: { metadata: { labels: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec } };
}
interface ServiceObject extends K8sObject {
  spec: { selector?: Record<string, string>; ports: { name?: string; port: number; targetPort?: string | number }[] };
}
interface PeerSelector {
  podSelector?: { matchLabels?: Record<string, string> };
  namespaceSelector?: { matchLabels?: Record<string, string>; matchExpressions?: { key: string; operator: string; values?: string[] }[] };
  ipBlock?: object;
}
interface NetworkPolicyObject extends K8sObject {
  spec: {
    podSelector: { matchLabels?: Record<string, string> };
    policyTypes?: string[];
    ingress?: { from?: PeerSelector[]; ports?: { port?: string | number }[] }[];
  };
}

/** A non-empty label selector that `labels` satisfies. */
function selects(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  const entries = Object.entries(selector ?? {});
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

/** A container port given by name or number → its number. */
function portNumber(container: Container, port: string | number | undefined): number | undefined {
  if (typeof port === "number") return port;
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

function yamlFilesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return yamlFilesUnder(path);
    return /\.ya?ml$/.test(e.name) ? [path] : [];
  });
}

const clone = <T>(value: T): T => structuredClone(value);

/** Computes once, on first use inside a test: a broken kustomization then fails tests, not the file's collection. */
function lazy<T>(compute: () => T): () => T {
  let value: { v: T } | undefined;
  return () => (value ??= { v: compute() }).v;
}

const rendered = Object.fromEntries(KUSTOMIZATIONS.map((k) => [k, lazy(() => renderKustomization(join(ROOT, k)))]));
const render = (dir: string) => (rendered[dir] as () => ReturnType<typeof renderKustomization>)();

// ---- the slowlane deployment, as the contract checks see it ----------------------------------------------------

interface Deployment {
  objects: K8sObject[];
  config: Config;
  configMap: K8sObject;
  app: Workload;
  worker: Workload;
}

function findDeployment(objects: K8sObject[]): Deployment {
  const configMaps = objects.filter(
    (o) => o.kind === "ConfigMap" && (o.data as Record<string, string> | undefined)?.[CONFIG_KEY] !== undefined,
  );
  expect(configMaps, `one ConfigMap holding ${CONFIG_KEY}`).toHaveLength(1);
  const configMap = configMaps[0] as K8sObject;
  const config = parseConfig((configMap.data as Record<string, string>)[CONFIG_KEY] as string, { file: CONFIG_KEY });
  const workloads = objects.filter((o): o is Workload => o.kind === "Deployment");
  const app = workloads.filter((w) => w.spec.template.spec.initContainers?.some((c) => c.name === "slowlane"));
  const worker = workloads.filter((w) => w.spec.template.spec.containers.some((c) => c.name === "slowlane"));
  expect(app, "one Deployment with the slowlane sidecar").toHaveLength(1);
  expect(worker, "one Deployment of slowlane workers").toHaveLength(1);
  return { objects, config, configMap, app: app[0] as Workload, worker: worker[0] as Workload };
}

function sidecarOf(d: Deployment): Container {
  return d.app.spec.template.spec.initContainers?.find((c) => c.name === "slowlane") as Container;
}
function workerOf(d: Deployment): Container {
  return d.worker.spec.template.spec.containers.find((c) => c.name === "slowlane") as Container;
}
function appContainerOf(d: Deployment): Container {
  const others = d.app.spec.template.spec.containers.filter((c) => c.name !== "slowlane");
  expect(others, "the app pod has exactly one app container").toHaveLength(1);
  return others[0] as Container;
}
function servicesOf(d: Deployment): ServiceObject[] {
  return d.objects.filter((o): o is ServiceObject => o.kind === "Service");
}

// ---- contract checks (each throws on a violation) ------------------------------------------------------------

/** The sidecar is a native sidecar running `proxy`; the workers run `worker`; both are real CLI commands. */
function checkRoles(d: Deployment): void {
  const commands = cliCommands();
  for (const role of Roles) expect(commands, `CLI usage lists the role ${role}`).toContain(role);
  const sidecar = sidecarOf(d);
  expect(sidecar.restartPolicy, "the sidecar is a native sidecar (initContainer, restartPolicy Always)").toBe("Always");
  expect(sidecar.args).toEqual(["proxy"]);
  expect(workerOf(d).args).toEqual(["worker"]);
  for (const c of [sidecar, workerOf(d)]) {
    expect(commands).toContain(c.args?.[0]);
    expect(c.command, "no command override: the image's ENTRYPOINT runs dist/cli.js").toBeUndefined();
    expect(splitImage(c.image).name).toBe(splitImage(sidecar.image).name);
  }
}

/** Ports, probes, config mount, env, security, resources and scrape annotations of both slowlane pods. */
function checkSlowlaneContainers(d: Deployment): void {
  const codeEnv = envVarsReadByCode();
  const uid = imageUid();
  for (const [workload, container, role] of [
    [d.app, sidecarOf(d), "proxy"],
    [d.worker, workerOf(d), "worker"],
  ] as const) {
    const pod = workload.spec.template.spec;
    const where = `${workload.metadata.name}/${container.name}`;

    // Ports: the config's listen and admin addresses.
    const admin = container.ports?.find((p) => p.name === "admin");
    expect(admin?.containerPort, `${where}: admin port = admin.listen`).toBe(d.config.admin.listen.port);
    const http = container.ports?.find((p) => p.name === "http");
    if (role === "proxy") expect(http?.containerPort, `${where}: http port = listen`).toBe(d.config.listen.port);
    else expect(http, `${where}: a worker serves no proxy port`).toBeUndefined();

    // Probes on the admin port.
    for (const [probe, path] of [
      ["startupProbe", "/healthz"],
      ["livenessProbe", "/healthz"],
      ["readinessProbe", "/readyz"],
    ] as const) {
      const get = container[probe]?.httpGet;
      expect(get?.path, `${where}: ${probe} path`).toBe(path);
      expect(portNumber(container, get?.port), `${where}: ${probe} port`).toBe(d.config.admin.listen.port);
    }

    // Env: only variables slowlane reads; the config file is the mounted ConfigMap's key.
    for (const e of container.env ?? []) expect([...codeEnv], `${where}: env ${e.name} is read by src/`).toContain(e.name);
    const configFile = container.env?.find((e) => e.name === "SLOWLANE_CONFIG")?.value;
    expect(configFile, `${where}: SLOWLANE_CONFIG set`).toBeDefined();
    const volume = pod.volumes?.find((v) => v.configMap?.name === d.configMap.metadata.name);
    expect(volume, `${where}: a volume of ConfigMap ${d.configMap.metadata.name}`).toBeDefined();
    const mount = container.volumeMounts?.find((m) => m.name === volume?.name);
    expect(mount, `${where}: the config volume is mounted`).toBeDefined();
    expect(mount?.subPath, `${where}: no subPath (a subPath mount never sees ConfigMap updates)`).toBeUndefined();
    const fileName = volume?.configMap?.items?.find((i) => i.key === CONFIG_KEY)?.path ?? CONFIG_KEY;
    expect(configFile, `${where}: SLOWLANE_CONFIG is the mounted file`).toBe(`${mount?.mountPath}/${fileName}`);

    // /tmp is the only writable place.
    const tmp = container.volumeMounts?.find((m) => m.mountPath === "/tmp");
    expect(pod.volumes?.find((v) => v.name === tmp?.name)?.emptyDir, `${where}: /tmp is an emptyDir`).toBeDefined();

    // Security: container settings override the pod's.
    const sc: SecurityContext = { ...pod.securityContext, ...container.securityContext };
    expect(sc.runAsNonRoot, `${where}: runAsNonRoot`).toBe(true);
    expect(sc.runAsUser, `${where}: runAsUser is the image's user`).toBe(uid);
    expect(sc.allowPrivilegeEscalation, `${where}: allowPrivilegeEscalation`).toBe(false);
    expect(sc.readOnlyRootFilesystem, `${where}: readOnlyRootFilesystem`).toBe(true);
    expect(sc.capabilities?.drop, `${where}: capabilities dropped`).toContain("ALL");
    expect(sc.seccompProfile?.type, `${where}: seccomp`).toBe("RuntimeDefault");

    for (const kind of ["requests", "limits"] as const) {
      expect(Object.keys(container.resources?.[kind] ?? {}).sort(), `${where}: resources.${kind}`).toEqual(["cpu", "memory"]);
    }

    const annotations = workload.spec.template.metadata.annotations ?? {};
    expect(annotations["prometheus.io/scrape"], `${where}: scraped`).toBe("true");
    expect(annotations["prometheus.io/port"], `${where}: scrape port = admin port`).toBe(String(d.config.admin.listen.port));
    expect(annotations["prometheus.io/path"], `${where}: scrape path`).toBe("/metrics");

    // The grace period covers every preStop sleep, slowlane's drain and a margin.
    const preStops = [...(pod.initContainers ?? []), ...pod.containers].reduce(
      (sum, c) => sum + (c.lifecycle?.preStop?.sleep?.seconds ?? 0),
      0,
    );
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    expect(grace, `${where}: terminationGracePeriodSeconds ≥ preStop + shutdownTimeout + 5 s`).toBeGreaterThanOrEqual(
      preStops + d.config.shutdownTimeoutMs / 1000 + 5,
    );
  }
}

/** The TCP port of the config's upstream URL. */
function upstreamPort(config: Config): number {
  const url = new URL(config.upstream);
  return Number(url.port || (url.protocol === "https:" ? 443 : 80));
}

/**
 * The upstream reaches the app without slowlane in between: in the app pod its host is 127.0.0.1 (hostAliases),
 * elsewhere it is a Service targeting the app container's port (never the proxy's, which would requeue jobs).
 */
function checkUpstream(d: Deployment): void {
  const url = new URL(d.config.upstream);
  const port = upstreamPort(d.config);
  const appPod = d.app.spec.template.spec;
  const app = appContainerOf(d);
  expect(app.ports?.map((p) => p.containerPort), "the app listens on the upstream port").toContain(port);
  expect([d.config.listen.port, d.config.admin.listen.port]).not.toContain(port);

  const alias = appPod.hostAliases?.find((a) => a.hostnames.includes(url.hostname));
  expect(alias?.ip, `${url.hostname} is 127.0.0.1 in the app pod`).toBe("127.0.0.1");
  expect(d.worker.spec.template.spec.hostAliases ?? [], "workers resolve the upstream through DNS").toEqual([]);

  const backend = servicesOf(d).find((s) => s.metadata.name === url.hostname.split(".")[0]);
  expect(backend, `a Service named ${url.hostname}`).toBeDefined();
  expect(backend?.metadata.namespace).toBe(d.worker.metadata.namespace);
  const appLabels = d.app.spec.template.metadata.labels;
  expect(selects(backend?.spec.selector, appLabels), `${url.hostname} selects the app pods`).toBe(true);
  const backendPort = backend?.spec.ports.find((p) => p.port === port);
  const target = portNumber(app, backendPort?.targetPort ?? backendPort?.port);
  expect(target, `${url.hostname}:${port} targets the app's port`).toBe(port);

  // And clients reach slowlane's proxy port through some Service.
  const sidecar = sidecarOf(d);
  const front = servicesOf(d).filter(
    (s) =>
      selects(s.spec.selector, d.app.spec.template.metadata.labels) &&
      s.spec.ports.some((p) => portNumber(sidecar, p.targetPort ?? p.port) === d.config.listen.port),
  );
  expect(front.length, "a Service sends clients to slowlane's proxy port").toBeGreaterThan(0);
}

/** Only the workers reach the app's own port; the NATS policy admits both kinds of slowlane pods. */
function checkNetworkPolicies(d: Deployment, natsPolicy: NetworkPolicyObject): void {
  const policies = d.objects.filter((o): o is NetworkPolicyObject => o.kind === "NetworkPolicy");
  const appLabels = d.app.spec.template.metadata.labels;
  const workerLabels = d.worker.spec.template.metadata.labels;
  const app = appContainerOf(d);
  const appPort = upstreamPort(d.config);
  const onAppPods = policies.filter((p) => selects(p.spec.podSelector.matchLabels, appLabels));
  expect(onAppPods.length, "a NetworkPolicy guards the app pods").toBeGreaterThan(0);
  const portOf = (p: { port?: string | number }) => portNumber(app, p.port) ?? portNumber(sidecarOf(d), p.port);
  const rules = onAppPods.flatMap((p) => p.spec.ingress ?? []).filter((r) => (r.ports ?? []).some((p) => portOf(p) === appPort));
  expect(rules.length, "some rule admits the workers to the app port").toBeGreaterThan(0);
  for (const rule of rules) {
    expect(rule.from?.length, "the app port is not open to everyone").toBeGreaterThan(0);
    for (const peer of rule.from ?? []) {
      expect(peer.namespaceSelector ?? peer.ipBlock, "app port peers are pods of this namespace").toBeUndefined();
      expect(selects(peer.podSelector?.matchLabels, workerLabels), "app port peers are the workers").toBe(true);
    }
  }

  const natsRule = natsPolicy.spec.ingress?.find((r) => r.ports?.some((p) => p.port === 4222));
  for (const [name, labels] of [
    ["app", appLabels],
    ["worker", workerLabels],
  ] as const) {
    expect(
      natsRule?.from?.some((peer) => selects(peer.podSelector?.matchLabels, labels)),
      `the NATS NetworkPolicy admits the ${name} pods`,
    ).toBe(true);
  }
}

/** The Secret a documented `kubectl create secret generic NAME --namespace NS --from-literal=KEY=...` makes. */
interface DocumentedSecret {
  object: K8sObject;
  key: string;
}

/** The Secret the comment of deploy/kubernetes/base/kustomization.yaml tells ops to make, as that command makes it. */
function documentedSecret(): DocumentedSecret {
  const text = readFileSync(join(DEPLOY, "kubernetes/base/kustomization.yaml"), "utf8");
  const m = /kubectl create secret generic (\S+) --namespace (\S+) --from-literal=(\w+)=/.exec(text);
  expect(m, "kustomization.yaml says how to make the NATS credentials Secret").not.toBeNull();
  const [, name, namespace, key] = m as unknown as [string, string, string, string];
  const object = { apiVersion: "v1", kind: "Secret", metadata: { name, namespace }, type: "Opaque", data: { [key]: Buffer.from("x").toString("base64") } };
  return { object, key };
}

/** Files the config's nats.auth and nats.tls name. */
function natsCredentialFiles(config: Config): string[] {
  const { auth, tls } = config.nats;
  return [auth?.credsFile, auth?.nkeyFile, auth?.passwordFile, auth?.tokenFile, tls?.ca, tls?.cert, tls?.key].filter((f): f is string => f !== undefined);
}

/**
 * slowlane logs in to NATS from a mounted Secret: every credentials file of nats.auth/nats.tls is a key of the
 * documented Secret, mounted (not optional) in both slowlane containers; no NATS secret sits in an env value.
 */
function checkNatsCredentials(d: Deployment, secret: DocumentedSecret): void {
  const files = natsCredentialFiles(d.config);
  expect(d.config.nats.auth?.user, "nats.auth names the NATS user").toBeDefined();
  expect(files.length, "nats.auth names a credentials file").toBeGreaterThan(0);
  for (const [workload, container] of [
    [d.app, sidecarOf(d)],
    [d.worker, workerOf(d)],
  ] as const) {
    const where = `${workload.metadata.name}/${container.name}`;
    for (const e of container.env ?? []) {
      expect(["NATS_PASSWORD", "NATS_TOKEN"].includes(e.name) && e.value !== undefined, `${where}: ${e.name} is not a literal secret`).toBe(false);
    }
    for (const file of files) {
      const mount = container.volumeMounts?.find((m) => file.startsWith(`${m.mountPath}/`));
      const volume = workload.spec.template.spec.volumes?.find((v) => v.name === mount?.name);
      expect(volume?.secret?.secretName, `${where}: ${file} is in the Secret ${secret.object.metadata.name}`).toBe(secret.object.metadata.name);
      expect(volume?.secret?.optional, `${where}: the credentials Secret is not optional`).not.toBe(true);
      const inVolume = file.slice((mount?.mountPath.length ?? 0) + 1);
      const key = volume?.secret?.items?.find((i) => i.path === inVolume)?.key ?? inVolume;
      expect(key, `${where}: ${file} is the Secret's key`).toBe(secret.key);
    }
  }
}

/** The NATS servers require the user slowlane logs in as, with the password from a Secret of the same name and key. */
function checkNatsServerAuth(config: Config, secret: DocumentedSecret): void {
  const user = config.nats.auth?.user;
  const refs = (env: unknown[]) =>
    env.map((e) => (e as { valueFrom?: { secretKeyRef?: { name: string; key: string } } }).valueFrom?.secretKeyRef).filter((r) => r !== undefined);

  const helmUsers = HELM.config.merge?.authorization?.users ?? [];
  const helmUser = helmUsers.find((u) => u.user === user);
  expect(helmUser, `values.yaml: a NATS user ${user}`).toBeDefined();
  const helmVar = /^<< \$(\w+) >>$/.exec(String(helmUser?.password))?.[1];
  expect(helmVar, "values.yaml: the password comes from an environment variable").toBeDefined();
  const helmEnv = HELM.container?.env?.[helmVar ?? ""];
  expect(refs([helmEnv]), `values.yaml: ${helmVar} from the Secret`).toEqual([{ name: secret.object.metadata.name, key: secret.key }]);

  const conf = (NATS_SINGLE_NODE.find((o) => o.kind === "ConfigMap")?.data as Record<string, string>)["nats.conf"] ?? "";
  const single = new RegExp(`user: ${user}, password: \\$(\\w+)`).exec(conf)?.[1];
  expect(single, `single-node.yaml: a NATS user ${user} with the password from the environment`).toBeDefined();
  const sts = NATS_SINGLE_NODE.find((o) => o.kind === "StatefulSet") as Workload;
  const env = sts.spec.template.spec.containers[0]?.env?.filter((e) => e.name === single) ?? [];
  expect(refs(env), `single-node.yaml: ${single} from the Secret`).toEqual([{ name: secret.object.metadata.name, key: secret.key }]);
}

/** The NATS NetworkPolicy admits slowlane's pods from the namespaces that run slowlane only, never from any namespace. */
function checkNatsNamespaces(natsPolicy: NetworkPolicyObject, namespaces: readonly string[]): void {
  const rule = natsPolicy.spec.ingress?.find((r) => r.ports?.some((p) => p.port === 4222));
  const peers = (rule?.from ?? []).filter((p) => p.namespaceSelector !== undefined);
  expect(peers.length, "the NATS client rule names namespaces").toBeGreaterThan(0);
  for (const peer of peers) {
    const { matchLabels = {}, matchExpressions = [] } = peer.namespaceSelector ?? {};
    expect(Object.keys(matchLabels).length + matchExpressions.length, "not every namespace (namespaceSelector: {})").toBeGreaterThan(0);
    const names = matchExpressions.find((e) => e.key === "kubernetes.io/metadata.name" && e.operator === "In")?.values ?? [];
    for (const ns of namespaces) expect(names, `the NATS NetworkPolicy admits namespace ${ns}`).toContain(ns);
  }
}

function checkDisruptionBudgets(d: Deployment): void {
  const pdbs = d.objects.filter((o) => o.kind === "PodDisruptionBudget") as (K8sObject & {
    spec: { selector: { matchLabels: Record<string, string> } };
  })[];
  for (const w of [d.app, d.worker]) {
    const covered = pdbs.some((p) => selects(p.spec.selector.matchLabels, w.spec.template.metadata.labels));
    expect(covered, `a PDB for ${w.metadata.name}`).toBe(true);
  }
}

/** slowlane.yaml's NATS address is the NATS Service of deploy/nats, and asks no more replicas than there are servers. */
function checkNatsAddress(d: Deployment, natsService: ServiceObject, helmReplicas: number): void {
  for (const server of d.config.nats.servers) {
    const url = new URL(server);
    const [service, namespace] = url.hostname.split(".");
    expect(service, `${server}: the NATS Service's name`).toBe(natsService.metadata.name);
    expect(namespace, `${server}: the NATS Service's namespace`).toBe(natsService.metadata.namespace);
    expect(natsService.spec.ports.map((p) => p.port), `${server}: the NATS client port`).toContain(Number(url.port || 4222));
  }
  expect(d.config.nats.replicas).toBeLessThanOrEqual(helmReplicas);
}

// ---- the Grafana dashboard -----------------------------------------------------------------------------------

const PROMQL_WORDS = new Set(["and", "or", "unless", "by", "without", "on", "ignoring", "offset", "bool"]);

/** Metric names in a PromQL expression: identifiers outside strings, matchers, ranges, label lists and calls. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  return [...bare.matchAll(/[A-Za-z_:][\w:]*/g)]
    .filter((m) => !bare.slice(m.index + m[0].length).trimStart().startsWith("("))
    .map((m) => m[0])
    .filter((w) => !PROMQL_WORDS.has(w));
}

function metricLabels(name: string): readonly string[] | undefined {
  if (METRICS[name] !== undefined) return METRICS[name];
  const histogram = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (histogram !== null && HISTOGRAMS.has(histogram[1] as string)) {
    const labels = METRICS[histogram[1] as string] ?? [];
    return histogram[2] === "bucket" ? [...labels, "le"] : labels;
  }
  return undefined;
}

interface Dashboard {
  __inputs?: { name: string; type: string; pluginId: string }[];
  panels: {
    id: number;
    type: string;
    title: string;
    datasource?: { uid: string };
    targets?: { expr: string; datasource?: { uid: string } }[];
  }[];
  templating: { list: { name: string; query?: { query: string } }[] };
}

/** Every series the dashboard queries is in {@link METRICS} (or a default metric), with labels it has. */
function checkDashboard(dashboard: Dashboard): void {
  const input = dashboard.__inputs?.find((i) => i.name === "DS_PROMETHEUS");
  expect(input).toMatchObject({ type: "datasource", pluginId: "prometheus" });
  const ids = dashboard.panels.map((p) => p.id);
  expect(new Set(ids).size, "panel ids are unique").toBe(ids.length);

  const exprs: string[] = [];
  for (const panel of dashboard.panels.filter((p) => p.type !== "row")) {
    expect(panel.datasource?.uid, `${panel.title}: datasource`).toBe("${DS_PROMETHEUS}");
    expect(panel.targets?.length, `${panel.title}: has queries`).toBeGreaterThan(0);
    for (const t of panel.targets ?? []) {
      expect(t.datasource?.uid ?? "${DS_PROMETHEUS}", `${panel.title}: query datasource`).toBe("${DS_PROMETHEUS}");
      exprs.push(t.expr);
    }
  }
  for (const variable of dashboard.templating.list) {
    const m = /^label_values\((.*),\s*(\w+)\)$/.exec(variable.query?.query ?? "");
    expect(m, `variable ${variable.name}: a label_values() query`).not.toBeNull();
    exprs.push(`${m?.[1]}`);
    const metric = metricNames(m?.[1] ?? "")[0] ?? "";
    const labels = [...(metricLabels(metric) ?? []), ...TARGET_LABELS];
    expect(labels, `variable ${variable.name}: ${metric} has label ${m?.[2]}`).toContain(m?.[2]);
  }

  for (const expr of exprs) {
    const names = metricNames(expr);
    expect(names.length, `${expr}: queries a metric`).toBeGreaterThan(0);
    const labelsInExpr = new Set([...TARGET_LABELS, "le"]);
    let defaultMetric = false;
    for (const name of names) {
      if (DEFAULT_METRIC_PREFIXES.some((p) => name.startsWith(p))) {
        defaultMetric = true;
        continue;
      }
      const labels = metricLabels(name);
      expect(labels, `${expr}: ${name} is a slowlane metric`).toBeDefined();
      for (const l of labels ?? []) labelsInExpr.add(l);
    }
    if (defaultMetric) continue;
    // Matchers and grouping may only name labels the expression's metrics have.
    for (const m of expr.matchAll(/(\w+)\s*(?:=~|!~|!=|=)\s*"/g)) {
      expect([...labelsInExpr], `${expr}: label ${m[1]}`).toContain(m[1]);
    }
    for (const m of expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) {
      for (const l of (m[1] as string).split(",").map((s) => s.trim()).filter(Boolean)) {
        expect([...labelsInExpr], `${expr}: grouping label ${l}`).toContain(l);
      }
    }
  }
}

// ---- the tests -----------------------------------------------------------------------------------------------

const NATS_SINGLE_NODE = readManifests(join(DEPLOY, "nats/single-node.yaml"));
const NATS_POLICY = readManifests(join(DEPLOY, "nats/network-policy.yaml")).find(
  (o) => o.kind === "NetworkPolicy",
) as NetworkPolicyObject;
const NATS_SERVICE = NATS_SINGLE_NODE.find((o) => o.kind === "Service" && o.metadata.name === "nats") as ServiceObject;
const HELM = parse(readFileSync(join(ROOT, HELM_VALUES), "utf8")) as {
  container?: { env?: Record<string, unknown> };
  config: {
    merge?: { authorization?: { users?: { user: string; password: string }[] } };
    cluster: { enabled: boolean; replicas: number };
    jetstream: {
      enabled: boolean;
      fileStore: { enabled?: boolean; pvc: { enabled: boolean; size: string }; maxSize?: string };
      merge?: { sync_interval?: string };
    };
  };
};

describe("every YAML file under deploy/", () => {
  const files = yamlFilesUnder(DEPLOY).map((f) => relative(ROOT, f));

  test.each(files)("%s parses and, if a manifest, is a valid Kubernetes object", async (file) => {
    const path = join(ROOT, file);
    const generatorInputs = new Set(KUSTOMIZATIONS.flatMap((k) => render(k).files).filter((f) => f.endsWith(CONFIG_KEY)));
    const patches = new Set(KUSTOMIZATIONS.flatMap((k) => render(k).patches));
    if (file.endsWith("kustomization.yaml")) {
      expect(parse(readFileSync(path, "utf8"))).toMatchObject({ kind: "Kustomization" });
    } else if (generatorInputs.has(path)) {
      expect(() => parseConfig(readFileSync(path, "utf8"), { file })).not.toThrow();
    } else if (patches.has(path)) {
      // A strategic-merge patch is a partial object: known fields only, nothing required.
      for (const obj of readManifests(path)) await validatePatch(obj);
    } else if (file === HELM_VALUES) {
      expect(HELM.config).toBeDefined();
    } else {
      const objects = readManifests(path);
      expect(objects.length).toBeGreaterThan(0);
      for (const obj of objects) await validateObject(obj);
    }
  });
});

describe.each(KUSTOMIZATIONS)("kustomization %s", (dir) => {
  const deployment = lazy(() => findDeployment(render(dir).objects));

  test("renders from files that all exist, into valid objects with unique names", async () => {
    const { objects, files } = render(dir);
    for (const f of files) expect(existsSync(f), f).toBe(true);
    for (const obj of objects) await validateObject(obj);
    const keys = objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`);
    expect(new Set(keys).size).toBe(keys.length);
  });

  test("runs the sidecar as `proxy` and the workers as `worker`", () => checkRoles(deployment()));
  test("matches the config: ports, probes, config mount, env, security, resources, grace period", () =>
    checkSlowlaneContainers(deployment()));
  test("reaches the app from the workers without going through slowlane", () => checkUpstream(deployment()));
  test("lets only the workers reach the app's port, and slowlane pods reach NATS", () =>
    checkNetworkPolicies(deployment(), NATS_POLICY));
  test("has a PodDisruptionBudget for each Deployment", () => checkDisruptionBudgets(deployment()));
  test("points at the NATS Service of deploy/nats", () =>
    checkNatsAddress(deployment(), NATS_SERVICE, HELM.config.cluster.replicas));
  test("logs in to NATS with a password from the mounted Secret that deploy/nats requires", () => {
    checkNatsCredentials(deployment(), documentedSecret());
    checkNatsServerAuth(deployment().config, documentedSecret());
  });
});

describe("the NATS credentials Secret", () => {
  test("the documented command makes a valid Secret, in the namespace the NATS NetworkPolicy admits", async () => {
    const secret = documentedSecret();
    await validateObject(secret.object);
    const overlayNamespace = render("deploy/kubernetes/overlays/example").objects.find((o) => o.kind === "Namespace")?.metadata.name;
    expect(secret.object.metadata.namespace).toBe(overlayNamespace);
    checkNatsNamespaces(NATS_POLICY, [overlayNamespace as string]);
  });
});

describe("overlays/example", () => {
  const objects = () => render("deploy/kubernetes/overlays/example").objects;

  test("puts everything in its namespace, which it creates", () => {
    const objects = render("deploy/kubernetes/overlays/example").objects;
    const namespace = objects.find((o) => o.kind === "Namespace")?.metadata.name;
    expect(namespace).toBeDefined();
    for (const o of objects.filter((o) => o.kind !== "Namespace")) {
      expect(o.metadata.namespace, `${o.kind} ${o.metadata.name}`).toBe(namespace);
    }
  });

  test("rewrites every image to a registry", () => {
    for (const c of podContainers(objects())) expect(c.image, c.name).toMatch(/^[\w.-]+\.[\w-]+\/.+:.+$/);
  });
});

describe("deploy/Dockerfile", () => {
  const stages = parseDockerfile(DOCKERFILE);
  const runtime = stages.at(-1);
  const last = (keyword: string) => runtime?.instructions.findLast((i) => i.keyword === keyword);
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
    bin: Record<string, string>;
    engines: { node: string };
  };

  test("builds on the Node major of package.json's engines", () => {
    const major = /(\d+)/.exec(pkg.engines.node)?.[1];
    for (const stage of stages) expect(stage.base).toMatch(new RegExp(`^node:${major}(-|$)`));
  });

  test("runs dist/cli.js under tini, `run` by default", () => {
    const entrypoint = last("ENTRYPOINT")?.exec;
    expect(entrypoint?.slice(1, 3)).toEqual(["--", "node"]);
    expect(entrypoint?.[0]).toMatch(/\/tini$/);
    expect(runtime?.instructions.some((i) => i.keyword === "RUN" && /\bapk add\b.*\btini\b/.test(i.text))).toBe(true);
    const workdir = last("WORKDIR")?.text as string;
    const script = resolve(workdir, entrypoint?.[3] ?? "");
    expect(script).toBe(join(workdir, pkg.bin.slowlane as string));
    // dist/ comes from the build stage, where `npm run build` writes it (tsconfig.build.json outDir).
    const outDir = (JSON.parse(readFileSync(join(ROOT, "tsconfig.build.json"), "utf8")) as { compilerOptions: { outDir: string } })
      .compilerOptions.outDir;
    const copy = runtime?.instructions.find((i) => i.keyword === "COPY" && /--from=build\b/.test(i.text));
    const [, from, to] = /--from=build\s+(\S+)\s+(\S+)/.exec(copy?.text ?? "") ?? [];
    const build = stages.find((s) => s.name === "build");
    const buildWorkdir = build?.instructions.findLast((i) => i.keyword === "WORKDIR")?.text as string;
    expect(from).toBe(join(buildWorkdir, outDir));
    expect(script.startsWith(`${resolve(workdir, to ?? "")}/`)).toBe(true);
    expect(build?.instructions.some((i) => i.keyword === "RUN" && i.text.includes("npm run build"))).toBe(true);

    const cmd = last("CMD")?.exec;
    expect(cmd).toEqual(["run"]);
    expect(Roles as readonly string[]).toContain(cmd?.[0]);
  });

  test("exposes the default listen and admin ports", () => {
    const defaults = parseConfig("");
    const exposed = runtime?.instructions.filter((i) => i.keyword === "EXPOSE").flatMap((i) => i.text.split(/\s+/).map(Number));
    expect(exposed?.sort()).toEqual([defaults.listen.port, defaults.admin.listen.port].sort());
  });

  test("runs as a numeric non-root user, the one the manifests expect", () => {
    expect(last("USER")?.text).toMatch(/^\d+:\d+$/);
    expect(imageUid()).toBeGreaterThan(0);
  });

  test("installs production dependencies without lifecycle scripts", () => {
    const installs = (s: (typeof stages)[number]) =>
      s.instructions.some((i) => i.keyword === "RUN" && /npm ci --omit=dev --ignore-scripts/.test(i.text));
    const deps = stages.find(installs);
    expect(deps?.name).toBeDefined();
    const copied = runtime?.instructions.some(
      (i) => i.keyword === "COPY" && i.text.includes(`--from=${deps?.name} `) && i.text.includes("node_modules"),
    );
    expect(copied, "the runtime stage copies node_modules from that stage").toBe(true);
  });

  test("copies only files that exist and that Dockerfile.dockerignore lets into the context", () => {
    const ignore = readFileSync(join(DEPLOY, "Dockerfile.dockerignore"), "utf8");
    const sources = stages
      .flatMap((s) => s.instructions)
      .filter((i) => i.keyword === "COPY" && !i.text.includes("--from="))
      .flatMap((i) => i.text.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(join(ROOT, source)), source).toBe(true);
      expect(isInContext(ignore, source), `${source} is in the build context`).toBe(true);
    }
    expect(isInContext(ignore, "node_modules"), "node_modules stays out").toBe(false);
    expect(isInContext(ignore, "dist"), "a local dist/ stays out").toBe(false);
  });
});

describe("deploy/nats", () => {
  test("values.yaml: a 3-server cluster with JetStream on persistent volumes", () => {
    const { cluster, jetstream } = HELM.config;
    expect(cluster).toMatchObject({ enabled: true, replicas: 3 });
    expect(jetstream.enabled).toBe(true);
    expect(jetstream.fileStore.enabled).not.toBe(false);
    expect(jetstream.fileStore.pvc.enabled).toBe(true);
    const gi = (size: string | undefined) => Number(/^(\d+)Gi$/.exec(size ?? "")?.[1]);
    const { maxSize, pvc } = jetstream.fileStore;
    expect(gi(maxSize), "JetStream's limit is below the volume size").toBeLessThan(gi(pvc.size));
    const sync = jetstream.merge?.sync_interval;
    expect(sync === "always" || parseDuration(sync ?? "") !== undefined, `sync_interval ${sync}`).toBe(true);
  });

  test("single-node.yaml: JetStream stores on the StatefulSet's volume", () => {
    const config = NATS_SINGLE_NODE.find((o) => o.kind === "ConfigMap")?.data as Record<string, string>;
    const storeDir = /store_dir:\s*(\S+)/.exec(config["nats.conf"] ?? "")?.[1];
    const sts = NATS_SINGLE_NODE.find((o) => o.kind === "StatefulSet") as Workload & {
      spec: { volumeClaimTemplates: { metadata: { name: string } }[] };
    };
    const claim = sts.spec.volumeClaimTemplates[0]?.metadata.name;
    const nats = sts.spec.template.spec.containers[0] as Container;
    expect(nats.volumeMounts?.find((m) => m.name === claim)?.mountPath).toBe(storeDir);
    const applies = selects(NATS_POLICY.spec.podSelector.matchLabels, sts.spec.template.metadata.labels);
    expect(applies, "the NATS NetworkPolicy applies to the server pod").toBe(true);
    expect(NATS_POLICY.metadata.namespace).toBe(sts.metadata.namespace);
  });
});

describe("deploy/grafana/slowlane-dashboard.json", () => {
  test("queries only slowlane's metrics, with their labels", () => {
    checkDashboard(JSON.parse(readFileSync(join(DEPLOY, "grafana/slowlane-dashboard.json"), "utf8")));
  });
});

describe("the checks catch mistakes", () => {
  const base = lazy(() => findDeployment(render("deploy/kubernetes/base").objects));
  /** A deep copy of the base deployment after `edit`. */
  const broken = (edit: (d: Deployment) => void): Deployment => {
    const objects = clone(base().objects);
    const d = { ...findDeployment(objects) };
    edit(d);
    return d;
  };

  const named = <T extends K8sObject>(d: Deployment, kind: string, name: string) =>
    d.objects.find((o) => o.kind === kind && o.metadata.name === name) as T;
  const containers = checkSlowlaneContainers;

  test.each<[string, (d: Deployment) => void, (d: Deployment) => void]>([
    ["a wrong admin port", (d) => ((sidecarOf(d).ports?.[1] as Port).containerPort = 9091), containers],
    ["a wrong readiness path", (d) => (workerOf(d).readinessProbe = { httpGet: { path: "/ready", port: "admin" } }), containers],
    ["a subPath config mount", (d) => ((sidecarOf(d).volumeMounts?.[0] as { subPath?: string }).subPath = CONFIG_KEY), containers],
    ["an env var nobody reads", (d) => workerOf(d).env?.push({ name: "SLOWLANE_UPSTREAM", value: "x" }), containers],
    ["a writable root filesystem", (d) => ((sidecarOf(d).securityContext as SecurityContext).readOnlyRootFilesystem = false), containers],
    ["a grace period shorter than the drain", (d) => (d.worker.spec.template.spec.terminationGracePeriodSeconds = 20), containers],
    ["an unknown command", (d) => (workerOf(d).args = ["serve"]), checkRoles],
    ["a plain init container", (d) => delete sidecarOf(d).restartPolicy, checkRoles],
    [
      "a backend Service through slowlane",
      (d) => ((named<ServiceObject>(d, "Service", "example-app-backend").spec.ports[0] as { targetPort: string }).targetPort = "http"),
      checkUpstream,
    ],
    ["no loopback alias in the app pod", (d) => (d.app.spec.template.spec.hostAliases = []), checkUpstream],
    ["a literal NATS password", (d) => workerOf(d).env?.push({ name: "NATS_PASSWORD", value: "hunter2" }), (d) => checkNatsCredentials(d, documentedSecret())],
    [
      "a password file outside the Secret",
      (d) => (sidecarOf(d).volumeMounts?.find((m) => m.name === "nats-credentials") as { mountPath: string }).mountPath = "/etc/other",
      (d) => checkNatsCredentials(d, documentedSecret()),
    ],
    [
      "an optional credentials Secret",
      (d) => ((d.worker.spec.template.spec.volumes?.find((v) => v.secret) as { secret: { optional?: boolean } }).secret.optional = true),
      (d) => checkNatsCredentials(d, documentedSecret()),
    ],
    [
      "the app port open to everyone",
      (d) => named<NetworkPolicyObject>(d, "NetworkPolicy", "example-app").spec.ingress?.forEach((rule) => delete rule.from),
      (d) => checkNetworkPolicies(d, NATS_POLICY),
    ],
  ])("%s", (_, edit, check) => {
    expect(() => check(base())).not.toThrow();
    expect(() => check(broken(edit))).toThrow();
  });

  test("a NATS NetworkPolicy open to every namespace", () => {
    const open = clone(NATS_POLICY);
    const peer = open.spec.ingress?.find((r) => r.ports?.some((p) => p.port === 4222))?.from?.find((p) => p.namespaceSelector);
    expect(() => checkNatsNamespaces(open, ["slowlane-example"])).not.toThrow();
    (peer as PeerSelector).namespaceSelector = {};
    expect(() => checkNatsNamespaces(open, ["slowlane-example"])).toThrow();
    expect(() => checkNatsNamespaces(NATS_POLICY, ["another-namespace"])).toThrow();
  });

  test("a misspelt field", async () => {
    const deployment = clone(base().app);
    const sc = sidecarOf({ ...base(), app: deployment }).securityContext as Record<string, unknown>;
    sc.readOnlyRootFileSystem = sc.readOnlyRootFilesystem;
    delete sc.readOnlyRootFilesystem;
    await expect(validateObject(deployment)).rejects.toThrow(/unknown fields .*readOnlyRootFileSystem/);
  });

  test("a dashboard query on an unknown metric or label", () => {
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, "grafana/slowlane-dashboard.json"), "utf8")) as {
      panels: { targets?: { expr: string }[] }[];
    };
    const target = dashboard.panels.find((p) => p.targets !== undefined)?.targets?.[0] as { expr: string };
    const original = target.expr;
    target.expr = "sum(rate(slowlane_requests_total[5m]))";
    expect(() => checkDashboard(dashboard as never)).toThrow();
    target.expr = "sum by (mode) (slowlane_jobs_running)";
    expect(() => checkDashboard(dashboard as never)).toThrow();
    target.expr = original;
    expect(() => checkDashboard(dashboard as never)).not.toThrow();
  });
});
