/**
 * Scans /proc (or a copy of it) for established TCP connections in every network namespace.
 *
 * The I/O is synchronous on purpose, measured: 200k readlinks through fs/promises take about twice
 * as long as readlinkSync (a promise and a thread-pool round trip per call, and the pool is shared
 * with DNS and every other fs user). scanProc keeps the event loop responsive by running the
 * synchronous steps in slices of at most `sliceMs` and yielding between them. The fd walk is the
 * native addon's when it is built (fd-walk.ts); one process's fds are then one blocking call.
 */
import { setImmediate as nextTurn } from "node:timers/promises";
import { AddressDecoder } from "./address-decoder.ts";
import { fdWalker, type FdWalkerKind } from "./fd-walk.ts";
import { type ProcScan, scanSteps } from "./scan-steps.ts";

export type { ProcScan } from "./scan-steps.ts";

export interface ScanOptions {
  /** procfs mount to read; "/proc" by default. */
  procRoot?: string;
  /** scanProc only: longest stretch of blocking work before the event loop gets a turn. */
  sliceMs?: number;
  /** Which fd walk maps sockets to processes; the native addon's when it is built, by default. */
  fdWalker?: FdWalkerKind;
  /** scanProc only: abandons the scan at its next slice (it rejects with the signal's reason). */
  signal?: AbortSignal;
}

const DEFAULT_SLICE_MS = 10;
/** Shared across scans: addresses repeat from one scan to the next. */
const decoder = new AddressDecoder();

export async function scanProc(options: ScanOptions = {}): Promise<ProcScan> {
  const sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
  const steps = scanSteps(options.procRoot ?? "/proc", decoder, fdWalker(options.fdWalker));
  const signal = options.signal;
  signal?.throwIfAborted();
  let sliceStart = performance.now();
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    if (performance.now() - sliceStart >= sliceMs) {
      await nextTurn();
      if (signal?.aborted) {
        // Closes the generator: the directory or file it has open is closed by its finally blocks.
        steps.return(undefined as never);
        signal.throwIfAborted();
      }
      sliceStart = performance.now();
    }
  }
}

/** Blocks until done: for tools and benchmarks, not for a process that serves anything. */
export function scanProcSync(options: ScanOptions = {}): ProcScan {
  const steps = scanSteps(options.procRoot ?? "/proc", decoder, fdWalker(options.fdWalker));
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}
