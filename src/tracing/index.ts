/**
 * Tracing, through one door: setup from the OTEL_* environment and the span helpers the proxy and
 * the worker call. Importing this loads `@opentelemetry/api` only; the SDK loads when enabled.
 */
export { DEFAULT_SERVICE_NAME, DISABLED_TRACING, TracingProtocols, startTracing, toTracingSettings } from "./setup.js";
export type { Tracing, TracingProtocol, TracingSettings } from "./setup.js";
export {
  carrierFromHeaders,
  endSpan,
  fromCarrier,
  injectTraceHeaderRecord,
  injectTraceHeaders,
  isJobTraceCarrier,
  logFields,
  startAttemptSpan,
  startClientSpan,
  startServerSpan,
  toCarrier,
} from "./spans.js";
export type { AttemptInfo, ClientCall, JobTraceCarrier, SpanEnd, TraceLogFields, TracedSpan } from "./spans.js";
export { HttpAttributes, SlowlaneAttributes } from "./attributes.js";
