/**
 * Durations in the YAML file are strings with a unit (`500ms`, `30s`, `10m`, `2h`, `7d`), parsed once at load
 * into whole milliseconds. A bare number is never a duration: `timeout: 30` would be ambiguous.
 */

/** The accepted form: a decimal number and a unit, nothing else (no spaces, no sign, no exponent). */
export const DURATION_PATTERN = /^\d+(\.\d+)?(ms|s|m|h|d)$/;

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
type Unit = keyof typeof UNIT_MS;

/** Largest unit first, for {@link formatDuration}. */
const UNITS_DESCENDING: readonly Unit[] = ["d", "h", "m", "s", "ms"];

/**
 * Parses a duration such as `30s` or `1.5h` into milliseconds, rounded to a whole millisecond.
 * Returns `undefined` for anything else, including zero, values that round to 0 ms and values too large to be
 * an exact integer.
 */
export function parseDuration(text: string): number | undefined {
  const match = DURATION_PATTERN.exec(text);
  if (match === null) return undefined;
  const unit = match[2] as Unit;
  const amount = Number(text.slice(0, text.length - unit.length));
  // Rounding absorbs floating-point noise: 1.1 * 1000 is 1100.0000000000002.
  const ms = Math.round(amount * UNIT_MS[unit]);
  return ms > 0 && Number.isSafeInteger(ms) ? ms : undefined;
}

/**
 * Formats milliseconds with the largest unit that divides them exactly (`90000` → `90s`, `7200000` → `2h`),
 * so `parseDuration(formatDuration(ms)) === ms` for every positive whole number of milliseconds.
 */
export function formatDuration(ms: number): string {
  if (Number.isInteger(ms) && ms > 0) {
    for (const unit of UNITS_DESCENDING) {
      if (ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
    }
  }
  return `${ms}ms`;
}
