/**
 * A request Node's parser refuses is logged at debug, like every request, without the secrets it
 * carried: Node hands the raw bytes it read to the `clientError` handler (`err.rawPacket`), and
 * they hold the client's Authorization and cookies.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { uniqueStream } from "../helpers/slowlane.js";
import { useSlowlane } from "../helpers/use-slowlane.js";
import { waitFor } from "../helpers/wait.js";
import { head, sendRaw } from "./raw-http.js";

const slowlane = useSlowlane({
  role: "proxy",
  config: { nats: { stream: uniqueStream("malformed") } },
  routes: [{ name: "jobs", methods: ["POST"], path: "/async/**" }],
});
let port: number;

beforeAll(() => {
  port = Number(new URL(slowlane.url).port);
});

describe("a malformed request's log line", () => {
  it("names what was wrong, and carries neither its Authorization, its cookie nor its raw bytes", async () => {
    const secret = `Bearer SECRET-${Math.random().toString(36).slice(2)}`;
    const cookie = `session=COOKIE-${Math.random().toString(36).slice(2)}`;
    // An invalid header line after the credentials: the parser fails once it has read them.
    const raw = head("GET /x HTTP/1.1", "Host: slowlane.test", `Authorization: ${secret}`, `Cookie: ${cookie}`, "Bad Header\u0001: x");
    const exchange = await sendRaw(port, raw, { finalResponses: 1 });
    expect(exchange.last?.status).toBe(400);
    const line = await waitFor(() => slowlane.logs.find((l) => l.msg === "malformed request from a client"), {
      what: "the malformed-request log line",
    });
    const text = JSON.stringify(slowlane.logs);
    expect(text).not.toContain(secret.slice(7));
    expect(text).not.toContain(cookie.slice(8));
    expect(line).toMatchObject({ code: expect.stringMatching(/^HPE_/), reason: expect.any(String) });
    // Not the error object: Node attaches the raw bytes it read to it (`rawPacket`).
    expect(line).not.toHaveProperty("err");
  });
});
