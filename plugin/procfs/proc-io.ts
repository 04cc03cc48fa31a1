/**
 * Synchronous /proc reads for the scan engine, which slices them itself (see scan.ts for why).
 * A process can vanish between any two calls: ENOENT and ESRCH mean "gone", never an error.
 */
import { closeSync, type Dir, opendirSync, openSync, readFileSync, readlinkSync, readSync } from "node:fs";
import type { TcpTableParser } from "./tcp-table.ts";

/** No real table comes near this (100k connections are ~15 MB); a tree pointing net/tcp at /dev/zero would. */
export const MAX_TABLE_BYTES = 512 * 1024 * 1024;
/** Directory entries per getdents batch, and between two yields (each may cost a syscall in `each`). */
const DIR_BATCH = 256;

export function isVanished(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "ENOENT" || code === "ESRCH";
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; vanished: boolean };

const VANISHED = { ok: false, vanished: true } as const;
export const FAILED = { ok: false, vanished: false } as const;

export function failure(error: unknown): { ok: false; vanished: boolean } {
  return isVanished(error) ? VANISHED : FAILED;
}

export function readLink(path: string): Outcome<string> {
  try {
    return { ok: true, value: readlinkSync(path) };
  } catch (error) {
    return failure(error);
  }
}

export function readSmallText(path: string): Outcome<string> {
  try {
    return { ok: true, value: readFileSync(path, "utf8") };
  } catch (error) {
    return failure(error);
  }
}

/**
 * Entry names of a directory, fed to `each` as they are read (DIR_BATCH per getdents batch), so that
 * a process with a million open files is neither a million-string array nor one long stall; `each`
 * returns false to stop early. Yields every DIR_BATCH entries; the value is the number handled.
 */
export function* eachDirEntry(path: string, each: (name: string) => boolean): Generator<void, Outcome<number>> {
  let dir: Dir;
  try {
    dir = opendirSync(path, { bufferSize: DIR_BATCH });
  } catch (error) {
    return failure(error);
  }
  let count = 0;
  try {
    for (let entry = dir.readSync(); entry !== null; entry = dir.readSync()) {
      count++;
      if (!each(entry.name)) break;
      if (count % DIR_BATCH === 0) yield;
    }
  } catch (error) {
    return failure(error);
  } finally {
    dir.closeSync();
  }
  return { ok: true, value: count };
}

/**
 * Streams a table file through the parser, one buffer at a time, yielding after each read. Only a
 * file that could not be opened can come back as vanished.
 */
export function* readTable(path: string, buffer: Uint8Array, parser: TcpTableParser): Generator<void, Outcome<number>> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    return failure(error);
  }
  let total = 0;
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buffer, 0, buffer.length, null);
      } catch {
        // Cut short, maybe after some rows went through: not a process that vanished before it was read.
        return FAILED;
      }
      if (n === 0) return { ok: true, value: total };
      parser.push(buffer.subarray(0, n));
      total += n;
      if (total > MAX_TABLE_BYTES) return FAILED;
      yield;
    }
  } finally {
    parser.end();
    closeSync(fd);
  }
}
