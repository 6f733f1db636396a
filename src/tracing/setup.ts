/**
 * Tracing setup from the standard OTEL_* variables. Off unless an OTLP endpoint is set: then,
 * and only then, the SDK is loaded (dynamic `import()`), so a slowlane without a collector loads
 * nothing but `@opentelemetry/api`, whose calls are no-ops.
 *
 * No context manager is registered: spans are parented by passing contexts explicitly (see
 * `spans.ts`), which costs nothing per await and needs no `@opentelemetry/context-async-hooks`.
 * The W3C trace-context propagator is registered globally, so `toCarrier`/`fromCarrier` and the
 * header injectors need no `Tracing` argument; with tracing off the API's no-op propagator is
 * left in place and the client's own `traceparent` travels on untouched.
 */
import { DiagLogLevel, ProxyTracerProvider, diag, propagation } from "@opentelemetry/api";
import type { DiagLogger, Tracer } from "@opentelemetry/api";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Logger } from "../log.js";

/** Tracing as the rest of slowlane sees it: a tracer (no-op when off) and a way to flush at exit. */
export interface Tracing {
  /** False when no endpoint is configured or the SDK is disabled; every span helper is then a no-op. */
  readonly enabled: boolean;
  readonly tracer: Tracer;
  /** Exports the spans still buffered, then stops. Never rejects; safe to call twice. */
  shutdown(): Promise<void>;
}

/** OTLP transports this build can speak. `grpc` is not installed. */
export const TracingProtocols = ["http/protobuf", "http/json"] as const;
export type TracingProtocol = (typeof TracingProtocols)[number];

/** What the environment asks for: where and how to export, or why tracing stays off. */
export type TracingSettings =
  | { readonly enabled: false; readonly reason: string; readonly warning?: boolean }
  | { readonly enabled: true; readonly url: string; readonly protocol: TracingProtocol; readonly warnings: readonly string[] };

/** `service.name` when `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) does not say. */
export const DEFAULT_SERVICE_NAME = "slowlane";

/** Tracing off: the API's no-op tracer, from a provider of its own so no global registration can turn it on. */
export const DISABLED_TRACING: Tracing = Object.freeze({
  enabled: false,
  tracer: new ProxyTracerProvider().getTracer(DEFAULT_SERVICE_NAME),
  shutdown: () => Promise.resolve(),
});

/** An environment variable, trimmed; empty counts as unset (as the SDK reads them). */
function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

/**
 * The traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT`
 * with `v1/traces` appended (the OTLP exporter specification's rules). `null` when set but not a URL.
 */
function toTracesUrl(env: NodeJS.ProcessEnv): string | null | undefined {
  const specific = envValue(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const base = envValue(env, "OTEL_EXPORTER_OTLP_ENDPOINT");
  const url = specific ?? (base === undefined ? undefined : `${base.endsWith("/") ? base : `${base}/`}v1/traces`);
  if (url === undefined) return undefined;
  return URL.canParse(url) && /^https?:$/.test(new URL(url).protocol) ? url : null;
}

/**
 * Reads the variables slowlane acts on itself: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` (`none`),
 * the endpoints and the protocol. Unlike the SDK's defaults, no endpoint means off, not localhost.
 */
export function toTracingSettings(env: NodeJS.ProcessEnv): TracingSettings {
  if (envValue(env, "OTEL_SDK_DISABLED")?.toLowerCase() === "true") return { enabled: false, reason: "OTEL_SDK_DISABLED is true" };
  if (envValue(env, "OTEL_TRACES_EXPORTER")?.toLowerCase() === "none") return { enabled: false, reason: "OTEL_TRACES_EXPORTER is none" };
  const url = toTracesUrl(env);
  if (url === undefined) return { enabled: false, reason: "no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" };
  if (url === null) {
    // The value itself is not repeated: a URL may carry credentials.
    return { enabled: false, reason: "the OTLP traces endpoint is not an http(s) URL", warning: true };
  }
  const requested = envValue(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? envValue(env, "OTEL_EXPORTER_OTLP_PROTOCOL");
  const known = TracingProtocols.find((p) => p === requested);
  if (requested === undefined || known !== undefined) return { enabled: true, url, protocol: known ?? "http/protobuf", warnings: [] };
  const warning = `OTLP protocol "${requested}" is not supported (use http/protobuf or http/json); using http/protobuf`;
  return { enabled: true, url, protocol: "http/protobuf", warnings: [warning] };
}

/** The URL without credentials or query, for a log line. */
function toLoggableUrl(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
}

/** OpenTelemetry's own complaints (a collector that refuses exports, say) as pino lines. */
function toDiagLogger(log: Logger): DiagLogger {
  const line =
    (level: "error" | "warn" | "info" | "debug" | "trace") =>
    (message: string, ...args: unknown[]): void =>
      log[level]({ otel: args.map((a) => (a instanceof Error ? a.message : String(a))) }, `opentelemetry: ${message}`);
  return { error: line("error"), warn: line("warn"), info: line("info"), debug: line("debug"), verbose: line("trace") };
}

async function createExporter(protocol: TracingProtocol, url: string): Promise<SpanExporter> {
  if (protocol === "http/json") {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
    return new OTLPTraceExporter({ url });
  }
  const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
  return new OTLPTraceExporter({ url });
}

/**
 * Loads the SDK and builds the provider: a batch processor in front of the OTLP exporter, and a
 * resource of `service.name` (default `slowlane`) plus what the SDK's env detector reads.
 * The sampler is left to `BasicTracerProvider`, which reads `OTEL_TRACES_SAMPLER`/`_ARG` itself
 * (default `parentbased_always_on`), as the processor reads `OTEL_BSP_*` and the exporter its
 * headers, timeout, compression and certificates: all from `process.env`.
 */
async function createProvider(protocol: TracingProtocol, url: string) {
  const [sdk, resources, core, exporter] = await Promise.all([
    import("@opentelemetry/sdk-trace-base"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/core"),
    createExporter(protocol, url),
  ]);
  const resource = resources
    .defaultResource()
    .merge(resources.resourceFromAttributes({ "service.name": DEFAULT_SERVICE_NAME }))
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new sdk.BasicTracerProvider({ resource, spanProcessors: [new sdk.BatchSpanProcessor(exporter)] });
  return { provider, propagator: new core.W3CTraceContextPropagator() };
}

/**
 * Starts tracing as the environment says. `env` decides on/off, endpoint and protocol; the other
 * OTEL_* variables (sampler, resource attributes, service name, exporter headers and timeouts,
 * batch sizes) are read by the SDK from `process.env`, so pass `process.env` outside tests.
 * With tracing off this resolves to {@link DISABLED_TRACING} without loading any SDK module.
 */
export async function startTracing(env: NodeJS.ProcessEnv = process.env, log?: Logger): Promise<Tracing> {
  const settings = toTracingSettings(env);
  if (!settings.enabled) {
    if (settings.warning) log?.warn(`tracing off: ${settings.reason}`);
    else log?.debug(`tracing off: ${settings.reason}`);
    return DISABLED_TRACING;
  }
  for (const warning of settings.warnings) log?.warn(warning);
  const { provider, propagator } = await createProvider(settings.protocol, settings.url);
  // Both are process-wide; remembered so shutdown undoes only what this call set.
  const ownsPropagator = propagation.setGlobalPropagator(propagator);
  const ownsDiag = log !== undefined && diag.setLogger(toDiagLogger(log), { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
  log?.info({ endpoint: toLoggableUrl(settings.url), protocol: settings.protocol }, "tracing on");

  let stopped: Promise<void> | undefined;
  async function stop(): Promise<void> {
    try {
      await provider.shutdown();
    } catch (err) {
      // An unreachable collector must not turn a clean exit into a failed one.
      log?.warn({ err }, "could not export the last spans");
    } finally {
      if (ownsPropagator) propagation.disable();
      if (ownsDiag) diag.disable();
    }
  }
  return {
    enabled: true,
    tracer: provider.getTracer(DEFAULT_SERVICE_NAME),
    shutdown: () => (stopped ??= stop()),
  };
}
