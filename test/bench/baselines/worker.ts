/**
 * A minimal worker: pulls from CONSUMER on STREAM (the harness creates both, MaxAckPending =
 * CONCURRENCY), POSTs each message's body to UPSTREAM, puts the response body in KV bucket BUCKET
 * under the message's subject token, acks (and waits for the ack's confirmation), with up to
 * CONCURRENCY messages in flight. The ceiling for slowlane's worker. Prints `READY` once pulling.
 */
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { Agent, request } from "undici";
import { env, exitOnSignal } from "./common.js";

// As slowlane connects: without async traces, which build an Error with a stack for every request.
const nc = await connect({ servers: env("NATS_URL").split(","), noAsyncTraces: true });
const js = jetstream(nc);
const kv = await new Kvm(js).open(env("BUCKET"));
const concurrency = Number(env("CONCURRENCY"));
const upstream = env("UPSTREAM");
const agent = new Agent({ headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 4_000 });
const consumer = await js.consumers.get(env("STREAM"), env("CONSUMER"));
const messages = await consumer.consume({ max_messages: concurrency });
exitOnSignal(async () => {
  messages.stop();
  await nc.drain();
});
console.log("READY");

for await (const msg of messages) {
  void (async () => {
    try {
      const res = await request(`${upstream}/work`, { dispatcher: agent, method: "POST", body: msg.data });
      const body = new Uint8Array(await res.body.arrayBuffer());
      const id = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
      await kv.put(id, body);
      await msg.ackAck();
    } catch (err) {
      console.error(err);
      msg.nak(1_000);
    }
  })();
}
