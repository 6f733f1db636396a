/**
 * The spans of one delivery, when tracing is on: the attempt (a child of the accept span stored with
 * the job, linked to the previous attempt) and its backend call (a client span whose context the
 * backend receives). With tracing off every function here returns at its first line.
 */
import type { JobRequest } from "../jobs/envelope.js";
import { lazyChild } from "../log.js";
import { noteAttemptTrace } from "../jobs/transitions.js";
import { carrierFromHeaders, endSpan, fromCarrier, logFields, startAttemptSpan, startClientSpan, toCarrier } from "../tracing/index.js";
import type { JobTraceCarrier, SpanEnd } from "../tracing/index.js";
import type { AttemptDeps, Run } from "./run.js";

/** The attempt's parent: the accept span stored with the job, else the client's own `traceparent`. */
function jobCarrier(job: JobRequest): JobTraceCarrier | undefined {
  return job.trace ?? carrierFromHeaders(job.headers);
}

/**
 * `deps` whose logger carries the job's trace (the accept span's ids): for the few lines written
 * before the attempt's span starts (a job final already, lost, held back), so made only if used.
 */
export function withJobTrace(deps: AttemptDeps, job: JobRequest): AttemptDeps {
  if (!deps.tracing.enabled) return deps;
  return { ...deps, log: lazyChild(deps.log, () => logFields(fromCarrier(jobCarrier(job)))) };
}

/**
 * The run with its attempt span started: queue wait since enqueue or since the previous attempt
 * ended, a link to the previous attempt's span (kept in the record), its own context noted for the
 * record's next write, and a logger that puts its ids on every line of the run. `deps` are the
 * forwarder's, without {@link withJobTrace}'s fields (pino would write them twice).
 */
export function startAttemptTrace(run: Run, deps: AttemptDeps): Run {
  if (!deps.tracing.enabled) return run.deps === deps ? run : { ...run, deps };
  const { job, route, tracked } = run;
  const { attempts, history, updatedAt, attemptTrace } = tracked.record;
  const previous = history?.at(-1);
  const waitFrom = previous ? previous.startedAt + previous.durationMs : job.createdAt;
  const info = { route: route.name, jobId: job.id, attempt: attempts, queueWaitMs: Math.max(0, updatedAt - waitFrom) };
  const trace = startAttemptSpan(deps.tracing, jobCarrier(job), attemptTrace ? { ...info, previousAttempt: attemptTrace } : info);
  noteAttemptTrace(tracked, toCarrier(trace.context));
  return { ...run, trace, deps: { ...deps, log: deps.log.child(logFields(trace.span)) } };
}

/**
 * Starts the backend call's client span; its context is what `callBackend` sends as `traceparent`.
 * An attempt the sampler left out gets none: the backend continues the trace from the attempt's
 * span, and nothing of it is exported anyway.
 */
export function startBackendCallTrace(run: Run, url: string): Run["backendCall"] {
  if (run.trace === undefined) return undefined;
  if (!run.trace.span.isRecording()) return run.trace;
  const { job, route } = run;
  run.backendCall = startClientSpan(run.deps.tracing, run.trace.context, { method: job.method, url, route: route.name, jobId: job.id });
  return run.backendCall;
}

/** Ends the backend call's span, once: after the response is stored, or with the error that ended the call. */
export function endBackendCallTrace(run: Run, end: SpanEnd): void {
  if (run.backendCall === undefined) return;
  endSpan(run.backendCall.span, end);
  run.backendCall = undefined;
}

/** Ends the attempt's span with how the attempt ended. */
export function endAttemptTrace(run: Run, outcome: string, error: unknown): void {
  if (run.trace !== undefined) endSpan(run.trace.span, error === undefined ? { outcome } : { outcome, error });
}
