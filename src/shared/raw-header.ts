/**
 * One header's value read from Node's `rawHeaders` (`[name, value, …]`), for the hottest paths:
 * `req.headers` is built on first use, every header of the request lower-cased into an object,
 * which a status poll that needs one or two headers should not pay for.
 */

/** The value of header `name` (lower-case), repeated lines joined with ", " as `req.headers` does; `undefined` when absent. */
export function rawHeader(rawHeaders: readonly string[], name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const key = rawHeaders[i] as string;
    // Lower-case only the names of the right length.
    if (key.length !== name.length || key.toLowerCase() !== name) continue;
    const line = rawHeaders[i + 1] as string;
    value = value === undefined ? line : `${value}, ${line}`;
  }
  return value;
}
