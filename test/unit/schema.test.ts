/**
 * The JSON Schema file editors use (`config/slowlane.schema.json`) is exactly what the code generates, the
 * example config points at it, and the example validates against it.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { configJsonSchema } from "../../src/config/index.js";

const SCHEMA_FILE = new URL("../../config/slowlane.schema.json", import.meta.url);
const EXAMPLE_FILE = new URL("../../config/slowlane.yaml", import.meta.url);
const FIXTURES = new URL("../fixtures/config/", import.meta.url);

type Schema = Record<string, unknown>;

/**
 * A validator for the few JSON Schema keywords the generated schema uses (no new dependency for a test). An
 * unknown keyword fails the test instead of being ignored, so it cannot pass by not looking.
 */
function validate(schema: Schema, value: unknown, path = "$"): string[] {
  const errors: string[] = [];
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  for (const [keyword, arg] of Object.entries(schema)) {
    switch (keyword) {
      case "$schema":
      case "default":
      case "description":
        break;
      case "type": {
        const ok =
          arg === "object" ? isObject(value)
          : arg === "array" ? Array.isArray(value)
          : arg === "integer" ? Number.isInteger(value)
          : arg === "number" ? typeof value === "number"
          : arg === "string" ? typeof value === "string"
          : arg === "boolean" ? typeof value === "boolean"
          : (() => {
              throw new Error(`type ${String(arg)} not supported by the test's validator`);
            })();
        if (!ok) errors.push(`${path}: not ${String(arg)}`);
        break;
      }
      case "properties":
        if (isObject(value)) {
          for (const [key, sub] of Object.entries(arg as Record<string, Schema>)) {
            if (key in value) errors.push(...validate(sub, value[key], `${path}.${key}`));
          }
        }
        break;
      case "additionalProperties":
        if (isObject(value) && arg === false) {
          const known = Object.keys((schema.properties ?? {}) as Schema);
          for (const key of Object.keys(value)) if (!known.includes(key)) errors.push(`${path}: unknown key ${key}`);
        } else if (isObject(arg)) {
          const known = Object.keys((schema.properties ?? {}) as Schema);
          if (isObject(value)) for (const [key, v] of Object.entries(value)) if (!known.includes(key)) errors.push(...validate(arg, v, `${path}.${key}`));
        } else if (arg !== false) {
          throw new Error(`additionalProperties ${JSON.stringify(arg)} not supported by the test's validator`);
        }
        break;
      case "propertyNames":
        if (isObject(value)) for (const key of Object.keys(value)) errors.push(...validate(arg as Schema, key, `${path}[${JSON.stringify(key)}]`));
        break;
      case "const":
        if (value !== arg) errors.push(`${path}: not ${JSON.stringify(arg)}`);
        break;
      case "enum":
        if (!(arg as unknown[]).includes(value)) errors.push(`${path}: not one of ${JSON.stringify(arg)}`);
        break;
      case "required":
        if (isObject(value)) for (const key of arg as string[]) if (!(key in value)) errors.push(`${path}: ${key} missing`);
        break;
      case "items":
        if (Array.isArray(value)) value.forEach((v, i) => errors.push(...validate(arg as Schema, v, `${path}[${i}]`)));
        break;
      case "minItems":
        if (Array.isArray(value) && value.length < (arg as number)) errors.push(`${path}: fewer than ${String(arg)} items`);
        break;
      case "minLength":
        if (typeof value === "string" && value.length < (arg as number)) errors.push(`${path}: shorter than ${String(arg)}`);
        break;
      case "minimum":
        if (typeof value === "number" && value < (arg as number)) errors.push(`${path}: below ${String(arg)}`);
        break;
      case "maximum":
        if (typeof value === "number" && value > (arg as number)) errors.push(`${path}: above ${String(arg)}`);
        break;
      case "pattern":
        if (typeof value === "string" && !new RegExp(arg as string).test(value)) errors.push(`${path}: does not match ${String(arg)}`);
        break;
      case "allOf":
        for (const sub of arg as Schema[]) errors.push(...validate(sub, value, path));
        break;
      case "anyOf":
        if (!(arg as Schema[]).some((sub) => validate(sub, value, path).length === 0)) errors.push(`${path}: matches no alternative`);
        break;
      default:
        throw new Error(`keyword ${keyword} not supported by the test's validator: extend it`);
    }
  }
  return errors;
}

describe("config/slowlane.schema.json", () => {
  const generated = `${JSON.stringify(configJsonSchema(), null, 2)}\n`;

  it("is what the code generates", () => {
    const committed = readFileSync(SCHEMA_FILE, "utf8");
    expect(committed, "config/slowlane.schema.json is out of date: run `npm run schema` (after `npm run build`)").toBe(
      generated,
    );
  });

  it("is named by the example config's first line, for the YAML language server", () => {
    const firstLine = readFileSync(EXAMPLE_FILE, "utf8").split("\n")[0];
    expect(firstLine).toBe("# yaml-language-server: $schema=./slowlane.schema.json");
  });

  it("accepts the example config and a minimal one", () => {
    const schema = JSON.parse(generated) as Schema;
    expect(validate(schema, parse(readFileSync(EXAMPLE_FILE, "utf8")))).toEqual([]);
    expect(validate(schema, parse(readFileSync(new URL("minimal.yaml", FIXTURES), "utf8")))).toEqual([]);
  });

  it("rejects what it can see key by key: unknown keys, bare numbers and words as durations, relative paths", () => {
    const schema = JSON.parse(generated) as Schema;
    const errors = validate(schema, parse(readFileSync(new URL("many-problems.yaml", FIXTURES), "utf8")));
    expect(errors).toEqual(
      expect.arrayContaining([
        "$.nats.ackWait: not string",
        expect.stringMatching(/^\$\.defaults\.timeout: does not match/),
        "$.routes[0]: unknown key timout",
        expect.stringMatching(/^\$\.routes\[1\]\.path: does not match/),
      ]),
    );
  });
});
