/**
 * A small kustomize renderer for the tests (there is no kustomize binary here). It implements only what
 * deploy/kubernetes uses, and throws on any other kustomization field, so a kustomization can never rely on
 * something these tests silently skip:
 *
 * - `resources`: YAML files (several documents each) or directories holding a kustomization.yaml;
 * - `configMapGenerator` with `files` and `behavior` create | replace | merge, only together with
 *   `generatorOptions.disableNameSuffixHash: true` (slowlane's config must keep a fixed name to hot-reload);
 * - `patches` with a `path` to a strategic-merge patch, which must match exactly one resource by kind and name;
 *   lists merge by their Kubernetes merge key (containers by name, ports by containerPort, ...), others replace;
 * - `images` (`newName`, `newTag`) on containers and initContainers of pod templates;
 * - `namespace`, set on every namespaced resource.
 */
import { readFileSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import type { K8sObject } from "./k8s-schema.js";

const SUPPORTED_FIELDS = new Set([
  "apiVersion",
  "kind",
  "namespace",
  "resources",
  "configMapGenerator",
  "generatorOptions",
  "patches",
  "images",
]);

/** Kinds without a namespace, among those kustomize could meet here. */
const CLUSTER_SCOPED = new Set(["Namespace"]);

/** Strategic-merge keys of the lists deploy/ patches may touch; other lists are replaced whole. */
const MERGE_KEYS: Record<string, string> = {
  containers: "name",
  initContainers: "name",
  env: "name",
  volumes: "name",
  volumeMounts: "mountPath",
  ports: "containerPort",
};

interface Kustomization {
  namespace?: string;
  resources?: string[];
  configMapGenerator?: { name: string; behavior?: "create" | "replace" | "merge"; files: string[] }[];
  generatorOptions?: { disableNameSuffixHash?: boolean };
  patches?: { path: string }[];
  images?: { name: string; newName?: string; newTag?: string }[];
}

export interface Rendering {
  objects: K8sObject[];
  /** Every file read, the kustomization.yaml files included. */
  files: string[];
  /** The patch files among them. */
  patches: string[];
}

/** Renders the kustomization in `dir`, like `kustomize build dir`. */
export function renderKustomization(dir: string): Rendering {
  const files: string[] = [];
  const patches: string[] = [];
  const objects = render(resolve(dir), files, patches);
  return { objects, files, patches };
}

/** Every YAML document in a file, skipping empty ones. */
export function readManifests(file: string): K8sObject[] {
  return parseAllDocuments(readFileSync(file, "utf8"))
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]?.message}`);
      return doc.toJS() as K8sObject | null;
    })
    .filter((obj): obj is K8sObject => obj !== null);
}

function render(dir: string, files: string[], patches: string[]): K8sObject[] {
  const file = join(dir, "kustomization.yaml");
  files.push(file);
  const k = parse(readFileSync(file, "utf8")) as Kustomization;
  const unsupported = Object.keys(k).filter((key) => !SUPPORTED_FIELDS.has(key));
  if (unsupported.length > 0) throw new Error(`${file}: unsupported by the test renderer: ${unsupported.join(", ")}`);

  const objects: K8sObject[] = [];
  for (const entry of k.resources ?? []) {
    const path = resolve(dir, entry);
    if (statSync(path).isDirectory()) {
      objects.push(...render(path, files, patches));
    } else {
      files.push(path);
      objects.push(...readManifests(path));
    }
  }

  for (const gen of k.configMapGenerator ?? []) {
    if (k.generatorOptions?.disableNameSuffixHash !== true) {
      throw new Error(`${file}: configMapGenerator ${gen.name} needs generatorOptions.disableNameSuffixHash: true`);
    }
    const data: Record<string, string> = {};
    for (const source of gen.files) {
      const [key, path] = source.includes("=") ? (source.split("=", 2) as [string, string]) : [basename(source), source];
      files.push(resolve(dir, path));
      data[key] = readFileSync(resolve(dir, path), "utf8");
    }
    const behavior = gen.behavior ?? "create";
    const existing = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === gen.name);
    if (behavior === "create") {
      if (existing !== undefined) {
        throw new Error(`${file}: ConfigMap ${gen.name} already exists (use behavior: replace or merge)`);
      }
      objects.push({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: gen.name }, data });
    } else {
      if (existing === undefined) throw new Error(`${file}: behavior ${behavior} but no ConfigMap ${gen.name} to ${behavior}`);
      existing.data = behavior === "replace" ? data : { ...(existing.data as Record<string, string>), ...data };
    }
  }

  for (const { path } of k.patches ?? []) {
    const patchFile = resolve(dir, path);
    files.push(patchFile);
    patches.push(patchFile);
    for (const patch of readManifests(patchFile)) {
      const targets = objects.filter((o) => o.kind === patch.kind && o.metadata.name === patch.metadata?.name);
      if (targets.length !== 1) {
        const what = `${patch.kind} ${patch.metadata?.name}`;
        throw new Error(`${patchFile}: the patch for ${what} matches ${targets.length} resources, not 1`);
      }
      const target = targets[0] as K8sObject;
      objects[objects.indexOf(target)] = strategicMerge(target, patch) as K8sObject;
    }
  }

  for (const image of k.images ?? []) {
    for (const container of podContainers(objects)) {
      const { name, tag } = splitImage(container.image);
      if (name !== image.name) continue;
      const newTag = image.newTag ?? tag;
      container.image = newTag === undefined ? (image.newName ?? name) : `${image.newName ?? name}:${newTag}`;
    }
  }

  if (k.namespace !== undefined) {
    for (const o of objects) if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  }
  return objects;
}

function strategicMerge(target: unknown, patch: unknown, key = ""): unknown {
  if (patch === null) return undefined;
  if (Array.isArray(target) && Array.isArray(patch) && MERGE_KEYS[key] !== undefined) {
    const mergeKey = MERGE_KEYS[key];
    const merged = [...target] as Record<string, unknown>[];
    for (const item of patch as Record<string, unknown>[]) {
      const i = merged.findIndex((t) => t[mergeKey] === item[mergeKey]);
      if (i === -1) merged.push(item);
      else merged[i] = strategicMerge(merged[i], item) as Record<string, unknown>;
    }
    return merged;
  }
  if (isPlainObject(target) && isPlainObject(patch)) {
    const merged: Record<string, unknown> = { ...target };
    for (const [k, v] of Object.entries(patch)) {
      const value = strategicMerge(merged[k], v, k);
      if (value === undefined) delete merged[k];
      else merged[k] = value;
    }
    return merged;
  }
  return patch;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `registry:5000/team/app:1.2` → name `registry:5000/team/app`, tag `1.2` (the tag follows the last slash). */
export function splitImage(image: string): { name: string; tag: string | undefined } {
  const slash = image.lastIndexOf("/");
  const colon = image.indexOf(":", slash + 1);
  return colon === -1 ? { name: image, tag: undefined } : { name: image.slice(0, colon), tag: image.slice(colon + 1) };
}

interface Container {
  name: string;
  image: string;
  [key: string]: unknown;
}

/** Containers and initContainers of every pod template (Deployments, StatefulSets). */
export function podContainers(objects: K8sObject[]): Container[] {
  return objects.flatMap((o) => {
    const spec = (o.spec as { template?: { spec?: { containers?: Container[]; initContainers?: Container[] } } } | undefined)
      ?.template?.spec;
    return [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])];
  });
}
