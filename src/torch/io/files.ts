// File plumbing shared by the checkpoint formats: exact positional reads, full writes, and
// writes that land atomically (a temp file renamed into place, so a killed process never leaves
// a half-written checkpoint under the real name).
import { closeSync, existsSync, fsyncSync, openSync, readSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { UserError } from "../../errors.ts";

/** Throws a UserError unless `path` is an existing regular file. */
export function requireFile(path: string, what: string, fix: string): void {
  if (!existsSync(path)) throw new UserError(`${what} not found`, path, fix);
  if (!statSync(path).isFile()) throw new UserError(`${what} is not a regular file`, path, fix);
}

/**
 * Reads exactly `length` bytes at `position` into `target` (from offset 0); a single read may
 * return less (Linux caps one read near 2 GiB), so it loops. Returns how many bytes it got
 * before the end of the file.
 */
export function readAt(fd: number, target: Uint8Array, length: number, position: number): number {
  let done = 0;
  while (done < length) {
    const got = readSync(fd, target, done, length - done, position + done);
    if (got === 0) break;
    done += got;
  }
  return done;
}

/** Writes all of `bytes` (one write may be partial). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) {
    done += writeSync(fd, bytes, done, bytes.byteLength - done);
  }
}

/** Runs `write(fd)` on `path + ".tmp"`, flushes it to disk, then renames it to `path`. */
export function writeAtomically(path: string, write: (fd: number) => void): void {
  const temporary = `${path}.tmp`;
  const fd = openSync(temporary, "w");
  try {
    write(fd);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temporary, { force: true });
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, path);
}
