import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Webhook } from "standardwebhooks";
import { afterAll, describe, expect, it } from "vitest";
import { toCallbackEvent } from "../../src/callbacks/payload.js";
import { loadWebhookSecret, parseWebhookSecret, signDelivery } from "../../src/callbacks/signature.js";

const dir = mkdtempSync(join(tmpdir(), "slowlane-secret-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SECRET = `whsec_${randomBytes(32).toString("base64")}`;

function secretFile(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

describe("loadWebhookSecret", () => {
  it("reads and trims whsec_<base64>", () => {
    expect(loadWebhookSecret(secretFile("ok", `  ${SECRET}\n`))).toBe(SECRET);
  });

  it.each([
    ["no prefix", randomBytes(32).toString("base64"), "expected \"whsec_\""],
    ["not base64", `whsec_${"!".repeat(40)}`, "expected \"whsec_\""],
    ["too short", `whsec_${randomBytes(16).toString("base64")}`, "16 bytes, fewer than 24"],
    ["two lines", `${SECRET}\n${SECRET}`, "expected \"whsec_\""],
  ])("refuses a secret with %s, without quoting it", (name, text, why) => {
    const file = secretFile(name.replace(/ /g, "-"), text);
    let message = "";
    try {
      loadWebhookSecret(file);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain(why);
    expect(message).toContain(file);
    const body = text.replace(/^whsec_/, "").trim();
    expect(message).not.toContain(body.slice(0, 8));
  });

  it("names a missing file and its error code", () => {
    expect(() => loadWebhookSecret(join(dir, "missing"))).toThrow(/missing cannot be read \(ENOENT\)/);
  });
});

describe("signDelivery", () => {
  it("signs so that a Standard Webhooks receiver verifies it", () => {
    const body = JSON.stringify(toCallbackEvent("completed", { id: "job1", status: "completed" }, new Date()));
    const timestampS = Math.floor(Date.now() / 1000);
    const headers = signDelivery(SECRET, { id: "msg_job1", timestampS, body });
    expect(headers["webhook-id"]).toBe("msg_job1");
    expect(headers["webhook-timestamp"]).toBe(String(timestampS));
    expect(headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(SECRET).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(SECRET).verify(`${body} `, headers)).toThrow();
    expect(() => new Webhook(parseWebhookSecret(`whsec_${randomBytes(32).toString("base64")}`)).verify(body, headers)).toThrow();
  });

  it("refuses ids and timestamps that would make an ambiguous signed string", () => {
    expect(() => signDelivery(SECRET, { id: "a.b", timestampS: 1, body: "{}" })).toThrow(/delivery id/);
    expect(() => signDelivery(SECRET, { id: "a\r\nx: y", timestampS: 1, body: "{}" })).toThrow(/delivery id/);
    expect(() => signDelivery(SECRET, { id: "a", timestampS: 1.5, body: "{}" })).toThrow(/whole seconds/);
  });
});

describe("toCallbackEvent", () => {
  it.each([
    ["completed", "job.completed"],
    ["failed", "job.failed"],
    ["canceled", "job.canceled"],
  ] as const)("%s becomes %s", (status, type) => {
    const data = { id: "x", status };
    expect(toCallbackEvent(status, data, new Date(Date.UTC(2025, 0, 2, 3, 4, 5)))).toEqual({
      type,
      timestamp: "2025-01-02T03:04:05.000Z",
      data,
    });
  });
});
