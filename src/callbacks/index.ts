/**
 * Signed completion callbacks (webhooks): the one door the proxy (accept) and the worker (delivery)
 * import. The URL pattern compiler and the address table behind it stay internal.
 */
export { checkCallbackUrl, compileCallbackPolicy, CallbackPatternError, isPrivateAddress, toConnectLookup, ADDRESS_REFUSED_CODE } from "./url-policy.js";
export type { CallbackPolicy, CallbackPolicyOptions, CallbackUrlCheck, LookupAll } from "./url-policy.js";
export { callbackPolicyOf } from "./route-policy.js";
export { loadWebhookSecret, parseWebhookSecret, signDelivery } from "./signature.js";
export type { SignedHeaders } from "./signature.js";
export { toCallbackEvent, CallbackEventType } from "./payload.js";
export type { CallbackEvent, FinalJobStatus } from "./payload.js";
export { createCallbackDispatcher, deliverCallback } from "./deliver.js";
export type { DeliverCallbackOptions, DeliveryOutcome } from "./deliver.js";
export { decodeDelivery, enqueueDelivery, toDeliveryId } from "./delivery-queue.js";
export type { CallbackDelivery } from "./delivery-queue.js";
export { createCompletionPublisher } from "./completion-publisher.js";
export type { CompletionPublisherOptions } from "./completion-publisher.js";
