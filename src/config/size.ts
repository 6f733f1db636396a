/**
 * Sizes in the YAML file: a whole number of bytes, or a decimal number and a unit (`512KiB`, `32MiB`, `1GiB`;
 * SI `kB`/`MB`/`GB` are powers of 1000), parsed once at load into whole bytes.
 */

export const SIZE_PATTERN = /^\d+(\.\d+)?(B|KiB|MiB|GiB|kB|KB|MB|GB)$/;

const UNIT_BYTES = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  kB: 1000,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
} as const;
type Unit = keyof typeof UNIT_BYTES;

/** Largest binary unit first, for {@link formatSize}. */
const UNITS_DESCENDING: readonly Unit[] = ["GiB", "MiB", "KiB", "B"];

/** Parses `32MiB` (or a number of bytes) into whole bytes; `undefined` for anything else or for 0. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  const match = SIZE_PATTERN.exec(value);
  if (match === null) return undefined;
  const unit = match[2] as Unit;
  const bytes = Math.round(Number(value.slice(0, value.length - unit.length)) * UNIT_BYTES[unit]);
  return bytes > 0 && Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Formats bytes with the largest binary unit that divides them exactly (`33554432` → `32MiB`). */
export function formatSize(bytes: number): string {
  for (const unit of UNITS_DESCENDING) {
    if (bytes % UNIT_BYTES[unit] === 0) return `${bytes / UNIT_BYTES[unit]}${unit}`;
  }
  return `${bytes}B`;
}
