/** Loads the Node-API addon (native/) that owns the BPF object and the ring-buffer reader thread. */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";
import { PluginError } from "../errors.ts";
import type { NativeConntrack, NativeConntrackOptions } from "../conntrack/conntrack-source.ts";

export interface NativeCounters {
  lost: number;
  failedConnects: number;
  connectNoPid: number;
  acceptNoSock: number;
  /** Runs of our programs the kernel skipped (BPF recursion protection): those events never happened for us. */
  missed: number;
  /** Ring-buffer records whose size is not the addon's struct tracker_event: dropped, never decoded (object and addon disagree). */
  badSizeRecords: number;
}

export interface NativeTrackerOptions {
  objectPath: string;
  ringBufferBytes?: number;
  drainIntervalMs?: number;
  wakeup?: boolean;
  onBatch: (batch: Uint8Array) => void;
  onError: (error: Error) => void;
}

export interface NativeTracker {
  counters(): NativeCounters;
  attachedPrograms(): string[];
  stop(): void;
}

interface NativeAddon {
  Tracker: new (options: NativeTrackerOptions) => NativeTracker;
  /** The ctnetlink reader (native/src/conntrack_wrap.h); throws with `errno` when the kernel says no. */
  Conntrack: new (options: NativeConntrackOptions) => NativeConntrack;
  /** CLOCK_MONOTONIC in ns: the clock of the events' timestamps, whatever the JS runtime's own clocks count from. */
  monotonicNowNs(): number;
  /**
   * Socket inodes open in one /proc/PID/fd directory, reading at most `maxEntries` from directory
   * position `from`; `next` is where to go on (absent at the end). Throws with the errno name as `code`.
   */
  socketInodes(fdDir: string, from?: bigint, maxEntries?: number): { inodes: Float64Array; next?: bigint };
}

export const projectRoot = fileURLToPath(new URL("../../", import.meta.url));
export const defaultAddonPath = `${projectRoot}build/Release/scope_tracker.node`;
export const defaultObjectPath = `${projectRoot}build/tracker.bpf.o`;

let loaded: NativeAddon | undefined;

/** Throws an Error with code ERR_BPF_ADDON when the addon is not built or cannot be loaded. */
export function loadNativeAddon(path = defaultAddonPath): NativeAddon {
  if (loaded !== undefined) return loaded;
  if (!existsSync(path)) {
    throw new PluginError("ERR_BPF_ADDON", `native addon not built: ${path} is missing (run scripts/build-native.sh)`);
  }
  try {
    loaded = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (error) {
    throw new PluginError("ERR_BPF_ADDON", `native addon ${path} failed to load: ${(error as Error).message}`, { cause: error });
  }
  return loaded;
}
