/** Private nats-server for tests: one per test file (or per test), on a free port with a temp store dir. */
export { findNatsServerBinary, getFreePort, startNatsServer, type NatsServer, type NatsServerOptions } from "../../scripts/nats-server.js";
