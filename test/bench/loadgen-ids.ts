/**
 * Load generator for many URLs: `<base><prefix><id>` for each id of a file (one per line), taken
 * round robin across all connections, so with more ids than a cache holds every request misses it.
 * Same settings and output as the autocannon CLI runs (`-c N -p 1`, JSON result on stdout).
 *   tsx test/bench/loadgen-ids.ts BASE PREFIX IDS_FILE DURATION_S CONNECTIONS [AMOUNT]
 * With AMOUNT, it stops after that many requests instead of after DURATION_S.
 */
import { readFileSync } from "node:fs";
import autocannon from "autocannon";

const [base, prefix, idsFile, durationS, connections, amount] = process.argv.slice(2);
if (!base || prefix === undefined || !idsFile || !durationS || !connections) {
  console.error("usage: loadgen-ids.ts BASE PREFIX IDS_FILE DURATION_S CONNECTIONS");
  process.exit(2);
}
const ids = readFileSync(idsFile, "utf8").split("\n").filter(Boolean);
// Start at a random place so consecutive runs do not replay the same order against a warm cache.
let next = Math.floor(Math.random() * ids.length);

const result = await autocannon({
  url: base,
  connections: Number(connections),
  pipelining: 1,
  ...(amount ? { amount: Number(amount) } : { duration: Number(durationS) }),
  requests: [
    {
      setupRequest: (req) => {
        next = (next + 1) % ids.length;
        return { ...req, path: `${prefix}${ids[next]}` };
      },
    },
  ],
});
process.stdout.write(JSON.stringify(result));
