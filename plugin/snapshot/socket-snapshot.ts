/**
 * The kernel's own view of every TCP socket a process holds, from the BPF iterator in
 * bpf/snapshot.bpf.c, read off the JS thread by the addon (native/src/snapshot_wrap.cc): one
 * buffer of `struct tracker_socket` records per read, one record per socket.
 */
import { PluginError } from "../errors.ts";
import { artifactsDir, loadNativeAddon } from "../ebpf/native-addon.ts";

/** build/snapshot.bpf.o beside the tracker's object, or where --artifacts-dir points (read on call). */
export function defaultSnapshotObjectPath(): string {
  return `${artifactsDir}snapshot.bpf.o`;
}

interface NativeSocketSnapshot {
  read(onBatch: (batch: Uint8Array) => void, onError: (error: Error) => void, onEnd: () => void): void;
  close(): void;
}

type SnapshotAddon = { SocketSnapshot?: new (options: { objectPath: string; probeReads?: boolean }) => NativeSocketSnapshot };

export class SocketSnapshot {
  readonly #native: NativeSocketSnapshot;
  #reading: Promise<Uint8Array> | undefined;

  /**
   * Loads and attaches the iterator program. Throws the addon's coded errors: ERR_BPF_ITER_UNSUPPORTED
   * (kernel before 5.8), ERR_BPF_PERMISSION, ERR_BPF_OBJECT, ERR_BPF_LOAD, ERR_BPF_ATTACH; ERR_BPF_ADDON
   * when the addon is missing or predates the snapshot reader. `probeReads` takes the program's
   * path for kernels 5.8-5.10 (helper reads; kernels without bpf_sock_from_file) on any kernel.
   */
  constructor(objectPath = defaultSnapshotObjectPath(), options: { probeReads?: boolean } = {}) {
    const addon = loadNativeAddon() as unknown as SnapshotAddon;
    if (typeof addon.SocketSnapshot !== "function") {
      throw new PluginError("ERR_BPF_ADDON", "the native addon predates the socket snapshot reader (rebuild it: bash scripts/setup.sh)");
    }
    this.#native = new addon.SocketSnapshot({ objectPath, probeReads: options.probeReads ?? false });
  }

  /** Every record of one pass, folded to one per socket (the lowest pid holding it). One read at a time. */
  read(): Promise<Uint8Array> {
    this.#reading ??= new Promise<Uint8Array>((resolve, reject) => {
      const batches: Uint8Array[] = [];
      const done = () => {
        this.#reading = undefined;
      };
      this.#native.read(
        (batch) => batches.push(batch),
        (error) => {
          done();
          reject(error);
        },
        () => {
          done();
          resolve(batches.length === 1 ? batches[0] : concat(batches));
        },
      );
    });
    return this.#reading;
  }

  close(): void {
    this.#native.close();
  }
}

function concat(batches: Uint8Array[]): Uint8Array {
  let size = 0;
  for (const b of batches) size += b.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (const b of batches) {
    out.set(b, at);
    at += b.byteLength;
  }
  return out;
}
