/**
 * A route's `callbacks.allow` compiled once per config object: the accept path checks every
 * `X-Callback-Url` against it and the worker's dispatcher judges connections by it. A reload
 * brings new config objects and so new policies.
 */
import type { CallbacksConfig } from "../config/types.js";
import { compileCallbackPolicy } from "./url-policy.js";
import type { CallbackPolicy } from "./url-policy.js";

const policies = new WeakMap<CallbacksConfig, CallbackPolicy>();

/** The compiled policy of a route's `callbacks` (validated at config load, so it compiles). */
export function callbackPolicyOf(callbacks: CallbacksConfig): CallbackPolicy {
  let policy = policies.get(callbacks);
  if (policy === undefined) {
    policy = compileCallbackPolicy(callbacks.allow);
    policies.set(callbacks, policy);
  }
  return policy;
}
