/**
 * The V8 heap policy the plugin runs with: no full collection while the old generation is smaller
 * than a floor (`--initial-old-space-size`, from `plugin/runtime/v8-flags`).
 *
 * The plugin's live heap is small (about 20 MB at 10k connections) and V8 grows a small heap's
 * limit by as little as 10%, so under a Report every few milliseconds it started a full
 * collection every few Reports, each one slowing the calls it overlapped by 10-20 ms (the whole
 * p99 of a 10k Report). With a floor set at start-up ("if the embedder pre-configures the initial
 * old generation size, V8 skips full GCs below it"), those collections stop; a heap already past
 * the floor (100k connections) is collected as before. V8 reads the flag only when the isolate is
 * created, so the launcher (scripts/start.sh) passes it and the plugin only reports it.
 *
 * The file's other flag, --single-threaded-gc, keeps the collector's work on the JS thread: on a
 * small host its helper threads compete for the cores with the socket snapshot's kernel walk, and
 * the JS thread waited for them inside each pause (README, V8 heap).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../package-root.ts";

/** What scripts/start.sh passes to node (and the README's Deno command to --v8-flags): one flag per line. */
export function pluginV8Flags(): string[] {
  return readFileSync(join(packageRoot, "plugin", "runtime", "v8-flags"), "utf8").split("\n").map((line) => line.trim()).filter((line) => line !== "");
}

export interface HeapPolicy {
  /** The old-generation floor in MiB from this process's command line; undefined when not given. */
  oldSpaceFloorMiB: number | undefined;
}

const FLOOR_FLAG = /^--initial[-_]old[-_]space[-_]size=(\d+)$/;

/**
 * The floor from a runtime's command line: a node flag (`--initial-old-space-size=64`) or one of
 * Deno's comma-separated `--v8-flags=...`. The last one given wins, as in V8.
 */
export function heapPolicy(commandLine: readonly string[]): HeapPolicy {
  let oldSpaceFloorMiB: number | undefined;
  for (const arg of commandLine) {
    const flags = arg.startsWith("--v8-flags=") ? arg.slice("--v8-flags=".length).split(",") : [arg];
    for (const flag of flags) {
      const match = FLOOR_FLAG.exec(flag.trim());
      if (match !== null) oldSpaceFloorMiB = Number(match[1]);
    }
  }
  return { oldSpaceFloorMiB };
}

/**
 * This process's command line as the kernel has it (runtime flags included, which neither
 * process.argv nor Deno.args show); empty when /proc cannot be read.
 */
export function processCommandLine(): string[] {
  try {
    return readFileSync("/proc/self/cmdline", "utf8").split("\0").filter((arg) => arg !== "");
  } catch {
    return [];
  }
}
