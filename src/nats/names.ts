/**
 * Every JetStream name slowlane uses, derived from the configured prefix (`nats.stream`).
 * Job ids and route names are validated before they get here (see `isJobId` and the config
 * schema), so nothing a client sends can put a wildcard or a dot into a subject.
 */
export interface JetStreamNames {
  /** The work-queue stream holding accepted requests. */
  readonly stream: string;
  /** KV bucket of job records (status, attempts, timestamps, response head). */
  readonly jobsBucket: string;
  /** KV bucket of response bodies that fit in one message. */
  readonly resultsBucket: string;
  /** Object Store of response bodies too large for one message. */
  readonly bodiesStore: string;
  /** Stream of dead letters: the requests of failed jobs, kept for `slowlane jobs retry`. */
  readonly deadStream: string;
  /** Subject of a failed job's request in {@link deadStream}. */
  deadSubject(route: string, id: string): string;
  /**
   * Subject of a job's "changed under you" notice (core NATS): sent when a job is canceled, deleted
   * or requeued by `slowlane jobs retry`. Workers abort a running call of that job; proxies drop it
   * from their cache of finished jobs.
   */
  cancelSubject(id: string): string;
  /** What workers subscribe to for cancel notices. */
  readonly cancelFilter: string;
  /** Subject of one job's request: one subject per job lets any replica find a queued job by id. */
  jobSubject(route: string, id: string): string;
  /** Filter of a route's consumer: all jobs of that route. */
  routeFilter(route: string): string;
  /** Durable consumer name of a route. */
  consumer(route: string): string;
  /** The route a durable consumer belongs to, or `undefined` for a consumer slowlane did not name. */
  routeOfConsumer(consumer: string): string | undefined;
}

export function toJetStreamNames(prefix: string): JetStreamNames {
  return {
    stream: prefix,
    jobsBucket: `${prefix}_jobs`,
    resultsBucket: `${prefix}_results`,
    bodiesStore: `${prefix}_bodies`,
    deadStream: `${prefix}_dead`,
    deadSubject: (route, id) => `${prefix}.dead.${route}.${id}`,
    cancelSubject: (id) => `${prefix}.cancel.${id}`,
    cancelFilter: `${prefix}.cancel.*`,
    jobSubject: (route, id) => `${prefix}.jobs.${route}.${id}`,
    routeFilter: (route) => `${prefix}.jobs.${route}.*`,
    consumer: (route) => `route_${route}`,
    routeOfConsumer: (consumer) => (consumer.startsWith("route_") ? consumer.slice("route_".length) : undefined),
  };
}
