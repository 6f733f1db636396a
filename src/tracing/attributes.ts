/**
 * Span attribute names. The HTTP ones are the stable OpenTelemetry semantic conventions, written
 * out as literals: importing `@opentelemetry/semantic-conventions` would load its tables on every
 * start, with tracing off too. `test/unit/tracing.test.ts` checks them against that package.
 */

/** Stable HTTP and URL attributes (semantic conventions 1.2x+), the subset slowlane sets. */
export const HttpAttributes = {
  requestMethod: "http.request.method",
  requestMethodOriginal: "http.request.method_original",
  responseStatusCode: "http.response.status_code",
  route: "http.route",
  urlPath: "url.path",
  urlScheme: "url.scheme",
  urlFull: "url.full",
  serverAddress: "server.address",
  serverPort: "server.port",
  networkProtocolVersion: "network.protocol.version",
  errorType: "error.type",
} as const;

/**
 * slowlane's own attributes, namespaced as the conventions ask of application attributes. None
 * carries a header value, a query string or a body: spans leave the pod.
 */
export const SlowlaneAttributes = {
  /** The async route's name (config `routes[].name`). */
  route: "slowlane.route",
  jobId: "slowlane.job.id",
  /** 1 for the first call to the backend, counted as the job record counts them. */
  attempt: "slowlane.job.attempt",
  /** Milliseconds the job waited in the queue before this attempt started. */
  queueWaitMs: "slowlane.job.queue_wait_ms",
  /** How the operation ended, in the words the logs and metrics use (`accepted`, `completed`, `timeout`, `503`…). */
  outcome: "slowlane.outcome",
} as const;
