/** Loads the Node-API addon (native/) that owns the BPF object and the ring-buffer reader thread. */
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { PluginError } from "../errors.ts";
import { packageRoot } from "../package-root.ts";
import type { NativeConntrack, NativeConntrackOptions } from "../conntrack/conntrack-source.ts";
import type { ProgramAttachment } from "../model/status.ts";

export interface NativeCounters {
  lost: number;
  failedConnects: number;
  connectNoPid: number;
  acceptNoSock: number;
  /** Runs of our programs the kernel skipped (BPF recursion protection): those events never happened for us. */
  missed: number;
  /** Ring-buffer records whose size is not the addon's struct tracker_event: dropped, never decoded (object and addon disagree). */
  badSizeRecords: number;
  /**
   * State changes the first tp_btf program was skipped for (a softirq or a preempting task's change
   * landed inside its run) and its backstop program handled: not missed, shown for diagnostics.
   */
  backstop?: number;
}

export interface NativeTrackerOptions {
  objectPath: string;
  /** Never try tp_btf: the classic tracepoints everywhere (for comparison and as an escape hatch). */
  tracepointsOnly?: boolean;
  ringBufferBytes?: number;
  drainIntervalMs?: number;
  wakeup?: boolean;
  onBatch: (batch: Uint8Array) => void;
  onError: (error: Error) => void;
}

export interface NativeTracker {
  counters(): NativeCounters;
  attachedPrograms(): string[];
  /** Every hook, with the program type attached to it and why; empty once stopped. */
  attachments(): ProgramAttachment[];
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

/**
 * Where the compiled parts live: the BPF objects (*.bpf.o) and Release/scope_tracker.node. By default
 * build/ in the package root, which is the checkout's build/ on the dev path and the package's
 * dist/build/ in a release (dist/ mirrors the checkout's layout); --artifacts-dir moves it.
 */
export let artifactsDir = `${packageRoot}build/`;
export let defaultAddonPath = `${artifactsDir}Release/scope_tracker.node`;
export let defaultObjectPath = `${artifactsDir}tracker.bpf.o`;

/** Points the defaults at another artifacts directory; call before anything loads the addon. */
export function useArtifactsDir(dir: string): void {
  artifactsDir = dir.endsWith("/") ? dir : `${dir}/`;
  defaultAddonPath = `${artifactsDir}Release/scope_tracker.node`;
  defaultObjectPath = `${artifactsDir}tracker.bpf.o`;
}

/** By path: a process may load the real addon and (tests) a stand-in beside it. */
const loaded = new Map<string, NativeAddon>();

/** Throws an Error with code ERR_BPF_ADDON when the addon is not built or cannot be loaded. */
export function loadNativeAddon(path: string = defaultAddonPath): NativeAddon {
  const known = loaded.get(path);
  if (known !== undefined) return known;
  if (!existsSync(path)) {
    throw new PluginError("ERR_BPF_ADDON", `native addon not built: ${path} is missing (run scripts/build-native.sh, or point --artifacts-dir at a directory holding Release/scope_tracker.node)`);
  }
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (error) {
    throw new PluginError("ERR_BPF_ADDON", `native addon ${path} failed to load: ${(error as Error).message}`, { cause: error });
  }
  loaded.set(path, addon);
  return addon;
}
