import { closeSync, openSync, readSync } from "node:fs";

/**
 * A file as UTF-8 text, or `undefined` when it holds more than `maxBytes`. For files an operator names
 * (the config, the key file): a wrong path (`/dev/zero`, a huge log) is refused at that size instead
 * of being read until memory runs out. Throws the file system's error (ENOENT, EACCES) as it is.
 */
export function readBounded(file: string, maxBytes: number): string | undefined {
  const fd = openSync(file, "r");
  try {
    const buffer = Buffer.alloc(maxBytes + 1);
    let size = 0;
    let read: number;
    do {
      read = readSync(fd, buffer, size, buffer.length - size, null);
      size += read;
    } while (read > 0 && size <= maxBytes);
    return size > maxBytes ? undefined : buffer.toString("utf8", 0, size);
  } finally {
    closeSync(fd);
  }
}
