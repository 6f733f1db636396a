/**
 * Every JetStream name slowlane uses, built and parsed here only, from the configured prefix
 * (`nats.stream`). Job ids and route names are validated before they get here (see `isJobId` and
 * the config schema), so nothing a client sends can put a wildcard or a dot into a subject.
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
  /**
   * KV bucket of open circuits: one key per route and worker process whose circuit is open (the
   * route is paused there), rewritten while it stays open and gone by the bucket's max_age once not.
   */
  readonly circuitsBucket: string;
  /** Key of one worker process's open circuit of a route in {@link circuitsBucket}. */
  circuitKey(route: string, worker: string): string;
  /** The route a key of {@link circuitsBucket} is about; `undefined` for a key slowlane did not write. */
  routeOfCircuitKey(key: string): string | undefined;
  /** The streams behind the buckets (`KV_<bucket>`, `OBJ_<store>`), as JetStream names them. */
  readonly jobsBucketStream: string;
  readonly resultsBucketStream: string;
  readonly bodiesStoreStream: string;
  readonly circuitsBucketStream: string;
  /** Subjects of the work-queue stream (every job of every route). */
  readonly jobsFilter: string;
  /** Subjects of the dead-letter stream. */
  readonly deadFilter: string;
  /** Subject of a failed job's request in {@link deadStream}. */
  deadSubject(route: string, id: string): string;
  /** The dead letters of one job, whatever its route. */
  deadOfJobFilter(id: string): string;
  /**
   * Subject of a job's "changed under you" notice (core NATS): sent when a job is canceled, deleted
   * or requeued by `slowlane jobs retry`. Workers abort a running call of that job; proxies drop it
   * from their cache of finished jobs.
   */
  cancelSubject(id: string): string;
  /** What workers and proxies subscribe to for cancel notices. */
  readonly cancelFilter: string;
  /** The job id a cancel notice is about; `undefined` for any other subject. */
  idOfCancelSubject(subject: string): string | undefined;
  /** Subject of one job's request: one subject per job lets any replica find a queued job by id. */
  jobSubject(route: string, id: string): string;
  /** The queued message of one job, whatever its route. */
  jobOfIdFilter(id: string): string;
  /** The route and id a job or dead-letter subject names; `undefined` for any other subject. */
  parseJobSubject(subject: string): { route: string; id: string } | undefined;
  /** Filter of a route's consumer: all jobs of that route. */
  routeFilter(route: string): string;
  /** Durable consumer name of a route. */
  consumer(route: string): string;
  /** The route a durable consumer belongs to, or `undefined` for a consumer slowlane did not name. */
  routeOfConsumer(consumer: string): string | undefined;
}

const CONSUMER_PREFIX = "route_";

export function toJetStreamNames(prefix: string): JetStreamNames {
  const jobsBucket = `${prefix}_jobs`;
  const resultsBucket = `${prefix}_results`;
  const bodiesStore = `${prefix}_bodies`;
  const cancelPrefix = `${prefix}.cancel.`;
  return {
    stream: prefix,
    jobsBucket,
    resultsBucket,
    bodiesStore,
    deadStream: `${prefix}_dead`,
    circuitsBucket: `${prefix}_circuits`,
    // Route names and worker ids are `[A-Za-z0-9_-]`: the dot between them is unambiguous.
    circuitKey: (route, worker) => `${route}.${worker}`,
    routeOfCircuitKey(key) {
      const [route, worker, ...rest] = key.split(".");
      return route && worker && rest.length === 0 ? route : undefined;
    },
    jobsBucketStream: `KV_${jobsBucket}`,
    resultsBucketStream: `KV_${resultsBucket}`,
    bodiesStoreStream: `OBJ_${bodiesStore}`,
    circuitsBucketStream: `KV_${prefix}_circuits`,
    jobsFilter: `${prefix}.jobs.>`,
    deadFilter: `${prefix}.dead.>`,
    deadSubject: (route, id) => `${prefix}.dead.${route}.${id}`,
    deadOfJobFilter: (id) => `${prefix}.dead.*.${id}`,
    cancelSubject: (id) => `${cancelPrefix}${id}`,
    cancelFilter: `${cancelPrefix}*`,
    idOfCancelSubject: (subject) => (subject.startsWith(cancelPrefix) ? subject.slice(cancelPrefix.length) : undefined),
    jobSubject: (route, id) => `${prefix}.jobs.${route}.${id}`,
    jobOfIdFilter: (id) => `${prefix}.jobs.*.${id}`,
    parseJobSubject(subject) {
      // `<prefix>.jobs.<route>.<id>` or `<prefix>.dead.<route>.<id>`; the prefix itself has no dot.
      const tokens = subject.split(".");
      if (tokens.length !== 4 || tokens[0] !== prefix || (tokens[1] !== "jobs" && tokens[1] !== "dead")) return undefined;
      return { route: tokens[2] as string, id: tokens[3] as string };
    },
    routeFilter: (route) => `${prefix}.jobs.${route}.*`,
    consumer: (route) => `${CONSUMER_PREFIX}${route}`,
    routeOfConsumer: (consumer) => (consumer.startsWith(CONSUMER_PREFIX) ? consumer.slice(CONSUMER_PREFIX.length) : undefined),
  };
}
