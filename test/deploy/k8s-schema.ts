/**
 * Offline Kubernetes schema checks for the manifests in deploy/, with kubernetes-models.
 *
 * `new Model(obj).validate()` checks types, enums and required fields against the OpenAPI schema, but the
 * Kubernetes schemas do not forbid unknown fields, so a misspelt key (`readOnlyRootFileSystem`) would pass and
 * silently drop a setting. {@link unknownFields} closes that gap: it walks the object along the models' type
 * declarations (the `.d.ts` files, one interface per file) and lists every key no interface declares, as the
 * API server's strict field validation (kubectl's default) would.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

interface ModelClass {
  new (data: unknown): { validate(): void };
  apiVersion?: string;
  kind?: string;
}

const NODE_MODULES = resolve(dirname(fileURLToPath(import.meta.url)), "../../node_modules");
const MODELS_DIR = join(NODE_MODULES, "kubernetes-models");

/** `apps/v1` + `Deployment` → the model's module path inside kubernetes-models (`v1` is the core group). */
function modelPath(apiVersion: string, kind: string): string {
  return join(MODELS_DIR, apiVersion, `${kind}`);
}

/**
 * Validates one object against its kind's schema and rejects unknown fields. Throws with every problem; an
 * apiVersion/kind that kubernetes-models does not know is an error too.
 */
export async function validateObject(obj: K8sObject): Promise<void> {
  const { Model, path, where } = await modelOf(obj);
  try {
    new Model(obj).validate();
  } catch (err) {
    throw new Error(`${where}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const unknown = unknownFields(obj, `${path}.d.ts`);
  if (unknown.length > 0) throw new Error(`${where}: unknown fields ${unknown.join(", ")}`);
}

/** Checks a strategic-merge patch: a known kind, and only fields the kind has (none is required in a patch). */
export async function validatePatch(obj: K8sObject): Promise<void> {
  const { path, where } = await modelOf(obj);
  const unknown = unknownFields(obj, `${path}.d.ts`);
  if (unknown.length > 0) throw new Error(`${where}: unknown fields ${unknown.join(", ")}`);
}

async function modelOf(obj: K8sObject): Promise<{ Model: ModelClass; path: string; where: string }> {
  const where = `${obj.kind ?? "?"} ${obj.metadata?.name ?? "?"}`;
  if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string" || !/^[A-Z]\w*$/.test(obj.kind)) {
    throw new Error(`${where}: not a Kubernetes object (apiVersion and kind are required)`);
  }
  const path = modelPath(obj.apiVersion, obj.kind);
  if (!existsSync(`${path}.js`)) throw new Error(`${where}: unknown kind ${obj.apiVersion}/${obj.kind}`);
  const module = (await import(`${path}.js`)) as Record<string, ModelClass>;
  const Model = module[obj.kind];
  // Sub-models (v1/Container) have no apiVersion/kind of their own: not something one can apply.
  if (Model === undefined || Model.apiVersion !== obj.apiVersion || Model.kind !== obj.kind) {
    throw new Error(`${where}: ${obj.apiVersion}/${obj.kind} is not a top-level kind`);
  }
  return { Model, path, where };
}

// ---- unknown fields ------------------------------------------------------------------------------------------

/** A property's type, as far as the walk needs it: another interface (maybe in a list), or a leaf. */
type FieldType = { file: string; list: boolean } | "leaf";

const interfaceCache = new Map<string, Map<string, FieldType> | undefined>();

/**
 * The properties of the first `export interface` in a model's `.d.ts`, with the file of each property's
 * interface type; `undefined` for a file that declares a type alias instead (`IntOrString`, `Quantity`).
 */
function interfaceOf(file: string): Map<string, FieldType> | undefined {
  if (interfaceCache.has(file)) return interfaceCache.get(file);
  const text = readFileSync(file, "utf8").replace(/\/\*\*[\s\S]*?\*\//g, "");
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    const [, name, spec] = m as unknown as [string, string, string];
    imports.set(name, spec.startsWith(".") ? resolve(dirname(file), spec.replace(/\.js$/, ".d.ts")) : packageFile(spec));
  }
  const body = /^export interface \w+(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/m.exec(text)?.[1];
  let fields: Map<string, FieldType> | undefined;
  if (body !== undefined) {
    fields = new Map();
    // Properties sit at four spaces; a map type (`{ [key: string]: T }`) spans lines, deeper, and is a leaf.
    for (const m of body.matchAll(/^ {4}"([^"]+)"\??: (.*)$/gm)) {
      const [, name, rest] = m as unknown as [string, string, string];
      const type = /^(Array<)?(\w+)>?;$/.exec(rest);
      const file = type?.[2] === undefined ? undefined : imports.get(type[2]);
      fields.set(name, file === undefined ? "leaf" : { file, list: type?.[1] !== undefined });
    }
  }
  interfaceCache.set(file, fields);
  return fields;
}

/** `@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta` → its `.d.ts`, nested install first. */
function packageFile(spec: string): string {
  const nested = join(MODELS_DIR, "node_modules", `${spec}.d.ts`);
  return existsSync(nested) ? nested : join(NODE_MODULES, `${spec}.d.ts`);
}

/** Paths of the keys in `value` that its type (the interface in `file`) does not declare. */
export function unknownFields(value: unknown, file: string, path = ""): string[] {
  const fields = interfaceOf(file);
  if (fields === undefined || typeof value !== "object" || value === null || Array.isArray(value)) return [];
  const found: string[] = [];
  for (const [key, child] of Object.entries(value)) {
    const at = path === "" ? key : `${path}.${key}`;
    const type = fields.get(key);
    if (type === undefined) {
      found.push(at);
    } else if (type !== "leaf") {
      const items: [unknown, string][] =
        type.list && Array.isArray(child) ? child.map((item, i) => [item, `${at}[${i}]`]) : [[child, at]];
      for (const [item, itemAt] of items) found.push(...unknownFields(item, type.file, itemAt));
    }
  }
  return found;
}
