/**
 * `X-Callback-Url` at accept (the header OpenFaaS uses): checked against the route's
 * `callbacks.allow` before anything is read or queued. Refused (400) when the route takes no
 * callbacks, when the URL is not http(s) or matches no pattern, or when its host is or resolves to a
 * loopback, private or link-local address that no pattern names literally.
 */
import type { IncomingMessage } from "node:http";
import { callbackPolicyOf, checkCallbackUrl } from "../callbacks/index.js";
import type { RouteConfig } from "../config/index.js";
import { BadRequestError } from "../errors.js";

export const CALLBACK_HEADER = "x-callback-url";

/** The checked callback URL of a request, or `undefined` when it asks for none. Throws {@link BadRequestError}. */
export async function readCallbackUrl(req: IncomingMessage, route: RouteConfig): Promise<string | undefined> {
  const value = req.headers[CALLBACK_HEADER];
  if (value === undefined) return undefined;
  // Node joins repeated headers with ", ": count the raw ones, so two URLs are not taken for one.
  const count = req.rawHeaders.filter((name, i) => i % 2 === 0 && name.toLowerCase() === CALLBACK_HEADER).length;
  if (count !== 1 || typeof value !== "string") throw new BadRequestError("send at most one X-Callback-Url");
  if (!route.callbacks) throw new BadRequestError("this route takes no callbacks: X-Callback-Url is not accepted here");
  const check = await checkCallbackUrl(callbackPolicyOf(route.callbacks), value.trim());
  if (!check.ok) throw new BadRequestError(`X-Callback-Url refused: ${check.reason}`);
  return check.url.href;
}

/** Stored request headers without `X-Callback-Url`: it is slowlane's, the backend does not get it. */
export function withoutCallbackHeader(headers: string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string;
    if (name.toLowerCase() !== CALLBACK_HEADER) kept.push(name, headers[i + 1] as string);
  }
  return kept;
}
