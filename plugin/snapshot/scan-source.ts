/**
 * Which scan seeds and reconciles the table. While a tracker is attached (eBPF live), the BPF
 * socket iterator: one kernel pass instead of a /proc walk of every namespace's tables and every
 * fd on the host. Otherwise, and whenever the iterator cannot be had, the /proc scan, with the
 * reason kept for status.
 */
import { readlinkSync } from "node:fs";
import { describeError, errorCode, PluginError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { ConnectionTable } from "../table/connection-table.ts";
import type { ScanOutcome } from "../supervisor/supervisor.ts";
import { digestBucket } from "../model/connection-digest.ts";
import { scanSockets, TableDigestMemo } from "./snapshot-scan.ts";
import { type SnapshotReader, SocketSnapshot } from "./socket-snapshot.ts";

export type Scan = (signal?: AbortSignal) => Promise<ScanOutcome>;

export interface ScanSourceOptions {
  procfs: Scan;
  /** A tracker is attached: the eBPF source is live (or being seeded). */
  ebpfLive: () => boolean;
  procRoot: string;
  objectPath?: string;
  /**
   * The table the scans reconcile: a snapshot is first compared with it, and when the kernel
   * holds exactly its connections the scan says so instead of building them.
   */
  table?: Pick<ConnectionTable, "size" | "changes" | "changesByBucket" | "snapshot">;
  /** Tests only: how the iterator is opened. */
  open?: (objectPath?: string) => SnapshotReader & Pick<SocketSnapshot, "close">;
  log: Logger;
}

/** Failures that no later attempt can cure on this host and this build. */
const PERMANENT = new Set(["ERR_BPF_ITER_UNSUPPORTED", "ERR_BPF_ADDON", "ERR_BPF_OBJECT", "ERR_SNAPSHOT_PID_NAMESPACE"]);

export class ScanSource {
  readonly #options: ScanSourceOptions;
  #snapshot: (SnapshotReader & Pick<SocketSnapshot, "close">) | undefined;
  /** The table's digest while it stays unchanged: an idle table is digested once, not at every reconcile. */
  readonly #tableDigest = new TableDigestMemo();
  /** Why the iterator is not used (set when opening it failed), or why the last snapshot fell back. */
  #unavailable: { code: string; text: string } | undefined;
  #lastReadFailure: string | undefined;
  iteratorScans = 0;
  procfsScans = 0;
  iteratorReadFailures = 0;

  constructor(options: ScanSourceOptions) {
    this.#options = options;
  }

  readonly scan: Scan = async (signal) => {
    const snapshot = this.#options.ebpfLive() ? this.#open() : undefined;
    if (snapshot !== undefined) {
      try {
        const scanned = await scanSockets(snapshot, { signal, confirm: this.#options.table, memo: this.#tableDigest });
        this.iteratorScans++;
        this.#lastReadFailure = undefined;
        if (scanned.malformed > 0) this.#options.log.warn("BPF socket snapshot had malformed records (skipped)", { malformed: scanned.malformed });
        // One pass over every task: no namespace can be half read, so every one is vouched for.
        const compared = scanned.compared;
        return {
          connections: scanned.connections, errors: scanned.malformed, confirmed: scanned.confirmed,
          compares: compared === undefined ? undefined : (c) => compared[digestBucket(c.localPort, c.remotePort)] === 1,
        };
      } catch (error) {
        if (signal?.aborted) throw error;
        this.iteratorReadFailures++;
        this.#lastReadFailure = describeError(error);
        this.#options.log.warn("BPF socket snapshot failed, this scan reads /proc", { error: this.#lastReadFailure });
      }
    }
    this.procfsScans++;
    return this.#options.procfs(signal);
  };

  /** For status while eBPF is live: where seeds and reconciles come from, and why not the iterator. */
  describe(): string {
    if (this.#unavailable !== undefined) return `seed and reconcile by /proc scan: the BPF socket iterator is unavailable: ${this.#unavailable.text}`;
    if (this.#lastReadFailure !== undefined) return `seed and reconcile by BPF socket iterator; its last read failed (${this.iteratorReadFailures} so far) and that scan used /proc: ${this.#lastReadFailure}`;
    return "seed and reconcile by BPF socket iterator (iter/task_file)";
  }

  close(): void {
    this.#snapshot?.close();
    this.#snapshot = undefined;
  }

  #open(): (SnapshotReader & Pick<SocketSnapshot, "close">) | undefined {
    if (this.#snapshot !== undefined) return this.#snapshot;
    if (this.#unavailable !== undefined && PERMANENT.has(this.#unavailable.code)) return undefined;
    try {
      this.#requireHostPidNamespace();
      this.#snapshot = (this.#options.open ?? ((path) => new SocketSnapshot(path)))(this.#options.objectPath);
      if (this.#unavailable !== undefined) this.#options.log.info("BPF socket iterator available again");
      this.#unavailable = undefined;
    } catch (error) {
      const text = describeError(error);
      if (this.#unavailable?.text !== text) this.#options.log.warn("BPF socket iterator unavailable, seeds and reconciles read /proc", { error: text });
      this.#unavailable = { code: errorCode(error), text };
    }
    return this.#snapshot;
  }

  /**
   * The iterator walks the tasks of the pid namespace that creates it; /proc shows those of the
   * namespace it was mounted in. When the plugin runs in a pid namespace of its own with the host's
   * /proc as --proc-root, only /proc sees every process.
   */
  #requireHostPidNamespace(): void {
    const ours = readlinkSync("/proc/self/ns/pid");
    let theirs: string;
    try {
      theirs = readlinkSync(`${this.#options.procRoot}/1/ns/pid`);
    } catch {
      return; // cannot tell (a fixture tree, no pid 1): the /proc scan could not do better
    }
    if (ours !== theirs) {
      throw new PluginError("ERR_SNAPSHOT_PID_NAMESPACE", `the plugin runs in pid namespace ${ours} but ${this.#options.procRoot} shows ${theirs}: the iterator would see only the plugin's own processes (run it in the host's pid namespace)`);
    }
  }
}
