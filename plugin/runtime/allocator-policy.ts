/**
 * The allocator policy the plugin runs with: glibc keeps freed memory for reuse instead of handing
 * it back to the kernel at once.
 *
 * Every Report leaves a buffer the size of its answer (0.6 MB at 10k connections) that is freed
 * only when V8 collects it, tens of calls later and all together. With glibc's defaults those
 * batches are returned to the kernel (heap trimming, or munmap for blocks over the dynamic mmap
 * threshold), and the next calls fault the same amount of memory back in, page by page; on a VM
 * where that costs ~20 µs a page, it was most of the plugin's time per Report. The tunables must
 * be in the environment when the process starts, so the launcher (scripts/start.sh) sets them
 * from `plugin/runtime/glibc-tunables`, ahead of any the caller set (later ones win), and the plugin only
 * reports whether they are in effect.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../package-root.ts";

/**
 * What scripts/start.sh puts in GLIBC_TUNABLES: one `name=value:...` line. Read on call: the plugin
 * itself only reports what it got, so its start-up neither reads nor depends on the file.
 */
export function pluginGlibcTunables(): string {
  return readFileSync(join(packageRoot, "plugin", "runtime", "glibc-tunables"), "utf8").trim();
}

const KEEPS_FREED_MEMORY = ["glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold"];

export interface AllocatorPolicy {
  /** GLIBC_TUNABLES as this process got it; undefined when unset. */
  glibcTunables: string | undefined;
  /** Both thresholds are set, whatever their values: someone chose them. */
  keepsFreedMemory: boolean;
}

export function allocatorPolicy(env: Record<string, string | undefined> = process.env): AllocatorPolicy {
  const glibcTunables = env.GLIBC_TUNABLES;
  const names = new Set((glibcTunables ?? "").split(":").map((entry) => entry.split("=")[0].trim()));
  return { glibcTunables, keepsFreedMemory: KEEPS_FREED_MEMORY.every((name) => names.has(name)) };
}

/** GLIBC_TUNABLES for a plugin process: ours first, so that the caller's own settings win. */
export function withPluginTunables(callerTunables: string | undefined): string {
  const ours = pluginGlibcTunables();
  return callerTunables === undefined || callerTunables === "" ? ours : `${ours}:${callerTunables}`;
}
