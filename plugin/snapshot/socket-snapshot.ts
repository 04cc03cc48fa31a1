/**
 * The kernel's own view of every TCP socket a process holds, from the BPF iterator in
 * bpf/snapshot.bpf.c, read off the JS thread by the addon (native/src/snapshot_wrap.cc): batches
 * of `struct tracker_socket` records while the kernel walks, one record per socket.
 */
import { PluginError } from "../errors.ts";
import { artifactsDir, loadNativeAddon } from "../ebpf/native-addon.ts";
import { checkSnapshotIterator, runningKernelRelease } from "../supervisor/kernel-support.ts";

/** build/snapshot.bpf.o beside the tracker's object, or where --artifacts-dir points (read on call). */
export function defaultSnapshotObjectPath(): string {
  return `${artifactsDir}snapshot.bpf.o`;
}

interface NativeSocketSnapshot {
  read(onBatch: (batch: Uint8Array) => void, onError: (error: Error) => void, onEnd: () => void): void;
  release?(batch: Uint8Array): boolean;
  close(): void;
}

type SnapshotAddon = { SocketSnapshot?: new (options: { objectPath: string; probeReads?: boolean }) => NativeSocketSnapshot };

/** What a scan needs of a snapshot: its read, and its release where the addon has one (a test's fake may not). */
export type SnapshotReader = Pick<SocketSnapshot, "read"> & Partial<Pick<SocketSnapshot, "release">>;

export class SocketSnapshot {
  readonly #native: NativeSocketSnapshot;
  /** The read in flight: the native side runs one at a time, and an abandoned scan's read runs on. */
  #previous: Promise<void> = Promise.resolve();

  /**
   * Loads and attaches the iterator program. Throws ERR_BPF_ITER_UNSUPPORTED on kernels the gate
   * refuses (checkSnapshotIterator: before 6.1), before anything is loaded (the addon's own refusal of
   * kernels without iter/task_file, before 5.8, stays behind it); the addon's coded errors: ERR_BPF_PERMISSION, ERR_BPF_OBJECT, ERR_BPF_LOAD, ERR_BPF_ATTACH; ERR_BPF_ADDON
   * when the addon is missing or predates the snapshot reader. `probeReads` takes the program's
   * path for kernels 5.8-5.10 (helper reads; kernels without bpf_sock_from_file) on any kernel.
   */
  constructor(objectPath = defaultSnapshotObjectPath(), options: { probeReads?: boolean } = {}) {
    const gate = checkSnapshotIterator({ release: runningKernelRelease() });
    if (!gate.supported) throw new PluginError("ERR_BPF_ITER_UNSUPPORTED", gate.reason);
    const addon = loadNativeAddon() as unknown as SnapshotAddon;
    if (typeof addon.SocketSnapshot !== "function") {
      throw new PluginError("ERR_BPF_ADDON", "the native addon predates the socket snapshot reader (rebuild it: bash scripts/setup.sh)");
    }
    this.#native = new addon.SocketSnapshot({ objectPath, probeReads: options.probeReads ?? false });
  }

  /**
   * One pass over the host's sockets: `onBatch` gets the records (folded, one per socket: the
   * lowest pid holding it) in batches as the kernel walk yields them, in order; the promise
   * settles after the last one, or rejects when the walk failed (the batches given so far are
   * then not a snapshot). Reads queue behind one another.
   */
  read(onBatch: (records: Uint8Array) => void): Promise<void> {
    const run = this.#previous.then(() => new Promise<void>((resolve, reject) => this.#native.read(onBatch, reject, resolve)));
    this.#previous = run.catch(() => undefined);
    return run;
  }

  /**
   * Frees a batch `read` gave, now rather than when V8 collects it (a 200k-socket snapshot is ~20 MB
   * of them, which V8 otherwise answers with a full collection): its bytes read as empty after this.
   * False, and nothing done, for anything else. An addon built before this always says false.
   */
  release(batch: Uint8Array): boolean {
    return this.#native.release?.(batch) ?? false;
  }

  close(): void {
    this.#native.close();
  }
}
