/** The part of autocannon's programmatic API that `loadgen-ids.ts` uses (the package ships no types). */
declare module "autocannon" {
  interface Request {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
  }
  interface Options {
    url: string;
    connections?: number;
    pipelining?: number;
    duration?: number;
    /** Stop after this many requests (instead of `duration`). */
    amount?: number;
    requests?: { setupRequest?: (req: Request, context: Record<string, unknown>) => Request }[];
  }
  function autocannon(opts: Options): Promise<unknown>;
  export default autocannon;
}
