/**
 * The parts of tracing that need no SDK: reading the environment, the carrier guard and header
 * parsing, and the attribute names against the semantic-conventions package.
 */
import * as semconv from "@opentelemetry/semantic-conventions";
import { describe, expect, it } from "vitest";
import { HttpAttributes, carrierFromHeaders, isJobTraceCarrier, toTracingSettings } from "../../src/tracing/index.js";

const TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

describe("toTracingSettings", () => {
  it("is off without an endpoint, and says why", () => {
    expect(toTracingSettings({})).toEqual({ enabled: false, reason: "no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" });
    expect(toTracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "  " }).enabled).toBe(false);
  });

  it("appends v1/traces to the generic endpoint and takes the traces endpoint as it is", () => {
    expect(toTracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" })).toMatchObject({ url: "http://collector:4318/v1/traces" });
    expect(toTracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/otlp/" })).toMatchObject({ url: "http://collector:4318/otlp/v1/traces" });
    expect(
      toTracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://traces.example/ingest" }),
    ).toMatchObject({ url: "https://traces.example/ingest" });
  });

  it("defaults to http/protobuf, takes http/json, prefers the traces-specific protocol, and warns on others", () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" };
    expect(toTracingSettings(endpoint)).toEqual({ enabled: true, url: "http://c:4318/v1/traces", protocol: "http/protobuf", warnings: [] });
    expect(toTracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" })).toMatchObject({ protocol: "http/json" });
    expect(
      toTracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf" }),
    ).toMatchObject({ protocol: "http/protobuf" });
    const grpc = toTracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" });
    expect(grpc).toMatchObject({ enabled: true, protocol: "http/protobuf" });
    expect(grpc.enabled && grpc.warnings[0]).toMatch(/"grpc" is not supported/);
  });

  it("is off when disabled, when the exporter is none, or when the endpoint is no http(s) URL (without echoing it)", () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" };
    expect(toTracingSettings({ ...endpoint, OTEL_SDK_DISABLED: "true" })).toEqual({ enabled: false, reason: "OTEL_SDK_DISABLED is true" });
    expect(toTracingSettings({ ...endpoint, OTEL_SDK_DISABLED: "false" }).enabled).toBe(true);
    expect(toTracingSettings({ ...endpoint, OTEL_TRACES_EXPORTER: "none" }).enabled).toBe(false);
    for (const bad of ["collector:4318", "not a url", "ftp://user:secret@c/"]) {
      const settings = toTracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: bad });
      expect(settings).toMatchObject({ enabled: false, warning: true });
      expect(JSON.stringify(settings)).not.toContain("secret");
    }
  });
});

describe("job trace carriers", () => {
  it("accepts only the carrier's shape", () => {
    expect(isJobTraceCarrier({ traceparent: TP })).toBe(true);
    expect(isJobTraceCarrier({ traceparent: TP, tracestate: "a=1" })).toBe(true);
    for (const bad of [null, "x", {}, { traceparent: 1 }, { traceparent: TP, tracestate: 2 }]) expect(isJobTraceCarrier(bad)).toBe(false);
  });

  it("reads the client's trace headers from stored pairs, any case, and refuses two traceparents", () => {
    expect(carrierFromHeaders(["Accept", "*/*", "TraceParent", TP])).toEqual({ traceparent: TP });
    expect(carrierFromHeaders(["traceparent", TP, "tracestate", "a=1", "TRACESTATE", "b=2"])).toEqual({ traceparent: TP, tracestate: "a=1,b=2" });
    expect(carrierFromHeaders(["traceparent", TP, "traceparent", TP])).toBeUndefined();
    expect(carrierFromHeaders(["tracestate", "a=1"])).toBeUndefined();
  });
});

describe("attribute names", () => {
  it("are the stable semantic conventions' own", () => {
    const expected = {
      requestMethod: semconv.ATTR_HTTP_REQUEST_METHOD,
      requestMethodOriginal: semconv.ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
      responseStatusCode: semconv.ATTR_HTTP_RESPONSE_STATUS_CODE,
      route: semconv.ATTR_HTTP_ROUTE,
      urlPath: semconv.ATTR_URL_PATH,
      urlScheme: semconv.ATTR_URL_SCHEME,
      urlFull: semconv.ATTR_URL_FULL,
      serverAddress: semconv.ATTR_SERVER_ADDRESS,
      serverPort: semconv.ATTR_SERVER_PORT,
      networkProtocolVersion: semconv.ATTR_NETWORK_PROTOCOL_VERSION,
      errorType: semconv.ATTR_ERROR_TYPE,
    };
    expect(HttpAttributes).toEqual(expected);
  });
});
