/**
 * The callback delivery queue: when a job that asked for a callback becomes final, one message goes
 * to the callback stream (JetStream, file storage) and a worker delivers it from there, retrying
 * across restarts. The message carries the event already serialised (every attempt sends the same
 * bytes) and, in one header, where and for which final record it is.
 */
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MsgHdrs } from "@nats-io/transport-node";
import { PUBLISH_TIMEOUT_MS } from "../jobs/queue.js";
import type { JobRecord, JobStatusBody } from "../jobs/record.js";
import type { JetStreamContext } from "../nats/context.js";
import { toCallbackEvent } from "./payload.js";
import type { FinalJobStatus } from "./payload.js";

export const DELIVERY_HEADER = "Slowlane-Callback";
const DELIVERY_VERSION = 1;

/** One callback to deliver: for job `id`'s final record written at `finalAt`. */
export interface CallbackDelivery {
  readonly id: string;
  readonly route: string;
  readonly url: string;
  /** The final record's `updatedAt` (epoch ms): the delivery's state is written only on that record. */
  readonly finalAt: number;
  /** The `webhook-id`, the same on every attempt of this delivery. */
  readonly deliveryId: string;
}

/** The `webhook-id` of the delivery for a job's final record written at `finalAt`. */
export function toDeliveryId(id: string, finalAt: number): string {
  return `job_${id}_${finalAt}`;
}

function isFinalStatus(status: string): status is FinalJobStatus {
  return status === "completed" || status === "failed" || status === "canceled";
}

/**
 * Queues the callback of a final record and resolves once JetStream has it. The message id makes a
 * second enqueue of the same final record (a worker finishing what a crashed one started) a no-op
 * within the duplicate window.
 */
export async function enqueueDelivery(context: Pick<JetStreamContext, "js" | "names">, record: JobRecord, statusBody: JobStatusBody): Promise<void> {
  const { callback } = record;
  if (!callback || !isFinalStatus(record.status)) return;
  const delivery: CallbackDelivery = {
    id: record.id,
    route: record.route,
    url: callback.url,
    finalAt: record.updatedAt,
    deliveryId: toDeliveryId(record.id, record.updatedAt),
  };
  const h = natsHeaders();
  h.set(DELIVERY_HEADER, JSON.stringify({ v: DELIVERY_VERSION, ...delivery }));
  const event = toCallbackEvent(record.status, statusBody, new Date(record.updatedAt));
  await context.js.publish(context.names.callbackSubject(record.route, record.id), JSON.stringify(event), {
    msgID: `${delivery.deliveryId}.callback`,
    headers: h,
    timeout: PUBLISH_TIMEOUT_MS,
  });
}

/** A delivery message's header read back; `undefined` for a message slowlane did not write. */
export function decodeDelivery(hdrs: MsgHdrs | undefined): CallbackDelivery | undefined {
  const raw = hdrs?.get(DELIVERY_HEADER);
  if (!raw) return undefined;
  try {
    const d = JSON.parse(raw) as Record<string, unknown> | null;
    if (
      d === null ||
      d.v !== DELIVERY_VERSION ||
      typeof d.id !== "string" ||
      typeof d.route !== "string" ||
      typeof d.url !== "string" ||
      typeof d.finalAt !== "number" ||
      typeof d.deliveryId !== "string"
    ) {
      return undefined;
    }
    return { id: d.id, route: d.route, url: d.url, finalAt: d.finalAt, deliveryId: d.deliveryId };
  } catch {
    return undefined;
  }
}
