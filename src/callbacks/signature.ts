/**
 * Standard Webhooks v1 signing (https://www.standardwebhooks.com): the receiver checks
 * `v1,` + base64(HMAC-SHA256(secret, `${id}.${timestamp}.${body}`)) with any Standard Webhooks library.
 * The HMAC itself is the `standardwebhooks` package's, so we sign exactly as receivers verify.
 */
import { readFileSync } from "node:fs";
import { Webhook } from "standardwebhooks";

/** The three headers of a signed delivery. */
export type SignedHeaders = {
  /** The delivery's id: the same on every retry, so a receiver can drop duplicates. */
  "webhook-id": string;
  /** When this attempt was signed, in whole seconds since the epoch; receivers refuse it 5 minutes later. */
  "webhook-timestamp": string;
  "webhook-signature": string;
};

const PREFIX = "whsec_";
/** Standard Webhooks asks for 24 to 64 random bytes; fewer makes the HMAC key guessable. */
const MIN_SECRET_BYTES = 24;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** The id goes into a header and into the signed string, where a `.` would blur where the id ends. */
const DELIVERY_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * Checks a secret written as `whsec_<base64>` (surrounding whitespace ignored) and returns it trimmed.
 * Error messages never contain the secret, not even part of it: they end up in logs.
 */
export function parseWebhookSecret(text: string): string {
  const secret = text.trim();
  const encoded = secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : undefined;
  if (encoded === undefined || encoded === "" || !BASE64.test(encoded)) {
    throw new Error('not a Standard Webhooks secret: expected "whsec_" followed by base64 (make one with: echo "whsec_$(openssl rand -base64 32)")');
  }
  const bytes = Buffer.from(encoded, "base64").length;
  if (bytes < MIN_SECRET_BYTES) {
    throw new Error(`the secret is ${bytes} bytes, fewer than ${MIN_SECRET_BYTES} (make one with: echo "whsec_$(openssl rand -base64 32)")`);
  }
  return secret;
}

/** Reads a route's `callbacks.secretFile` (a file holding `whsec_<base64>`); throws naming the file, never the secret. */
export function loadWebhookSecret(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unknown error";
    throw new Error(`callback secret file ${file} cannot be read (${code})`, { cause: err });
  }
  try {
    return parseWebhookSecret(text);
  } catch (err) {
    throw new Error(`callback secret file ${file}: ${(err as Error).message}`);
  }
}

/**
 * The Standard Webhooks headers for one attempt. `id` stays the same across retries of a delivery;
 * `timestampS` (seconds since the epoch) is the attempt's own, since receivers refuse old ones.
 */
export function signDelivery(secret: string, delivery: { id: string; timestampS: number; body: string }): SignedHeaders {
  if (!DELIVERY_ID.test(delivery.id)) throw new Error("a delivery id is 1-128 characters of A-Z a-z 0-9 _ -");
  if (!Number.isSafeInteger(delivery.timestampS) || delivery.timestampS < 0) {
    throw new Error("timestampS is whole seconds since the epoch");
  }
  const signature = new Webhook(secret).sign(delivery.id, new Date(delivery.timestampS * 1_000), delivery.body);
  return {
    "webhook-id": delivery.id,
    "webhook-timestamp": String(delivery.timestampS),
    "webhook-signature": signature,
  };
}
