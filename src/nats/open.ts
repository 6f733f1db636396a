/**
 * Opening what `provision` made, without creating or changing anything: for ops commands, which
 * must never touch stream settings (an old config file would otherwise shrink a bucket's max_age).
 */
import { JetStreamApiCodes, JetStreamApiError, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { toJetStreamNames } from "./names.js";
import { NotProvisionedError } from "../errors.js";
import { maxPayloadOf } from "./context.js";
import type { JetStreamContext } from "./context.js";

async function exists(jsm: JetStreamManager, stream: string): Promise<boolean> {
  try {
    await jsm.streams.info(stream);
    return true;
  } catch (err) {
    // "Stream not found" is the only answer that means absent; anything else (timeout, no JetStream) is a real error.
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return false;
    throw err;
  }
}

/** The JetStream context of an existing deployment; throws {@link NotProvisionedError} when any part is missing. */
export async function openJetStream(nc: NatsConnection, prefix: string): Promise<JetStreamContext> {
  const names = toJetStreamNames(prefix);
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const streams = [names.stream, names.deadStream, names.jobsBucketStream, names.resultsBucketStream, names.bodiesStoreStream];
  const found = await Promise.all(streams.map((s) => exists(jsm, s)));
  const missing = streams.filter((_, i) => !found[i]);
  if (missing.length > 0) throw new NotProvisionedError(prefix, missing);

  const kvm = new Kvm(js);
  const [jobs, results, bodies] = await Promise.all([
    kvm.open(names.jobsBucket),
    kvm.open(names.resultsBucket),
    new Objm(js).open(names.bodiesStore),
  ]);
  const maxPayloadBytes = maxPayloadOf(nc);
  return { nc, js, jsm, names, jobs, results, bodies, maxPayloadBytes, createdConsumers: [], consumerRoutes: [] };
}
