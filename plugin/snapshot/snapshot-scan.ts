/**
 * One snapshot of the host's TCP sockets turned into what a /proc scan gives (../procfs/scan.ts):
 * the established connections of every namespace with their owners, the listening ports per
 * namespace for direction. The kernel side filters nothing but the protocol; here the states are
 * picked as the /proc scan picks its rows (OPEN_TCP_STATES: established or half-closed).
 *
 * Decoding runs on the event loop in slices of at most `sliceMs`: 200k records are ~50 ms of work.
 * At that size what else stalls the loop is V8's collector, so the comparison path allocates next
 * to nothing per record (no iterator results, no boxed namespace inode) and hands each batch's
 * memory back as soon as the scan is done with it (`release`), rather than leaving ~20 MB of
 * external memory per scan for a full collection to find.
 */
import { setImmediate as nextTurn } from "node:timers/promises";
import type { Connection } from "../model/connection.ts";
import { ConnectionDigest, DIGEST_BUCKETS, digestBucket } from "../model/connection-digest.ts";
import { OPEN_TCP_STATES, TcpState } from "../procfs/tcp-table.ts";
import type { ConnectionTable } from "../table/connection-table.ts";
import { addressText, commText, Field, SOCKET_RECORD_SIZE, SOCKET_RECORD_TYPE, SocketField } from "./socket-records.ts";
import type { SnapshotReader } from "./socket-snapshot.ts";

export interface SnapshotScan {
  /** Open sockets (OPEN_TCP_STATES, as the /proc scan takes them), one per local socket, in every namespace. Empty when confirmed. */
  connections: Connection[];
  /** Listening TCP ports (IPv4 and IPv6) per network namespace inode. */
  listening: Map<number, Set<number>>;
  /** Namespaces with at least one TCP socket held by a process. */
  namespaces: number;
  /** TCP sockets in the snapshot, every state. */
  sockets: number;
  /** Records of an unknown type or family, or a trailing partial one: counted, never thrown. */
  malformed: number;
  /**
   * The `confirm` table holds exactly the snapshot's open sockets (tuple, namespace, pid, name)
   * and did not change while compared: no connection was built.
   */
  confirmed: boolean;
  /**
   * When the comparison confirmed part of the table: by digest bucket (digestBucket), 1 where
   * `connections` holds the snapshot's open sockets, to be compared one by one; 0 where the table
   * holds exactly the snapshot's and nothing was built. Undefined: `connections` is all of them.
   */
  compared?: Uint8Array;
  /** Until the kernel's walk ended (off the event loop, decoding alongside), then the rest (on it). */
  readMs: number;
  decodeMs: number;
  durationMs: number;
}

export interface SnapshotScanOptions {
  sliceMs?: number;
  /** Abandons the decoding at its next slice (rejects with the signal's reason). */
  signal?: AbortSignal;
  /**
   * A table to compare with before building connections (a reconcile's): the snapshot is digested
   * as it comes and connections are built only once it cannot match, or did not.
   */
  confirm?: Pick<ConnectionTable, "size" | "changes" | "changesByBucket" | "snapshot">;
  /** Remembers the confirm table's digest while the table does not change: an idle table is digested once. */
  memo?: TableDigestMemo;
}

/** The last digest of a table and the table's `changes` when it was taken. */
export class TableDigestMemo {
  #table: object | undefined;
  #changes = -1;
  #digest: ConnectionDigest | undefined;
  /** Digests taken (misses): what a test reads to know the memo was used. */
  computed = 0;

  get(table: object, changes: number): ConnectionDigest | undefined {
    return this.#table === table && this.#changes === changes ? this.#digest : undefined;
  }

  set(table: object, changes: number, digest: ConnectionDigest): void {
    this.#table = table;
    this.#changes = changes;
    this.#digest = digest;
    this.computed++;
  }
}

const DEFAULT_SLICE_MS = 4;
/** Past this many buckets to compare one by one, the scan builds every connection instead (as a full reconcile). */
const MOST_BUCKETS = DIGEST_BUCKETS / 2;
/** By TCP state: taken as a connection. The /proc scan's own set: both sources agree on what is open. */
const OPEN = new Uint8Array(256);
for (const state of OPEN_TCP_STATES) OPEN[state] = 1;
/** Records (or table entries) between two clock reads. */
const CHECK_EVERY = 512;

/**
 * One snapshot, decoded while the kernel's walk goes on: the addon hands batches over as it reads
 * them, and each is turned into connections in slices of at most `sliceMs` on the event loop.
 */
export async function scanSockets(snapshot: SnapshotReader, options: SnapshotScanOptions = {}): Promise<SnapshotScan> {
  const started = performance.now();
  const signal = options.signal;
  signal?.throwIfAborted();
  const scan = new ScanState(options.sliceMs ?? DEFAULT_SLICE_MS, signal);
  const table = options.confirm;
  // The table's change counts by bucket at the start: a bucket that changed during the walk cannot be confirmed.
  let comparing = table !== undefined && table.size > 0 ? { changes: table.changesByBucket.slice(), digest: new ConnectionDigest(), kept: [] as Uint8Array[] } : undefined;

  const arrived: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  let failure: { error: unknown } | undefined;
  const reading = snapshot.read((batch) => {
    arrived.push(batch);
    wake?.();
  }).then(() => {
    ended = true;
    wake?.();
  }, (error: unknown) => {
    failure = { error };
    ended = true;
    wake?.();
  });
  const release = (batch: Uint8Array) => {
    if (batch !== EMPTY) snapshot.release?.(batch);
  };
  try {
    return await consume();
  } finally {
    // Whatever happened, no batch is read again: arrived and not consumed (an abandoned scan), or kept for a comparison.
    for (const batch of arrived) release(batch);
    if (comparing !== undefined) for (const batch of comparing.kept) release(batch);
  }

  async function consume(): Promise<SnapshotScan> {
    let next = 0;
    for (;;) {
      if (next === arrived.length) {
        if (ended) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        signal?.throwIfAborted();
        scan.sliceStart = performance.now();
        continue;
      }
      const batch = arrived[next];
      await scan.census(batch);
      if (comparing === undefined) {
        await scan.decode(batch);
        arrived[next++] = EMPTY;
        release(batch);
        continue;
      }
      comparing.kept.push(batch);
      arrived[next++] = EMPTY;
      await scan.digest(batch, comparing.digest);
      if (comparing.digest.count > 2 * table!.size + 1024 || movedBuckets(table!.changesByBucket, comparing.changes) > MOST_BUCKETS) {
        // Most of it cannot match any more: all connections after all, from what came so far.
        await decodeKept(comparing.kept);
        comparing = undefined;
      }
    }
    await reading;
    if (failure !== undefined) throw failure.error;
    const read = performance.now();
    if (comparing !== undefined) {
      const ofTable = await scan.digestTable(table!, options.memo);
      const compared = new Uint8Array(DIGEST_BUCKETS);
      let differing = 0;
      for (let b = 0; b < DIGEST_BUCKETS; b++) {
        if (ofTable.changesByBucket[b] === comparing.changes[b] && ofTable.digest.bucketEquals(comparing.digest, b)) continue;
        compared[b] = 1;
        differing++;
      }
      if (differing === 0) scan.result.confirmed = true;
      else if (differing > MOST_BUCKETS) await decodeKept(comparing.kept);
      else {
        scan.result.compared = compared;
        await decodeKept(comparing.kept, compared);
      }
    }
    await scan.directLateListeners();
    const result = scan.result;
    const end = performance.now();
    result.readMs = read - started;
    result.decodeMs = end - read;
    result.durationMs = end - started;
    return result;
  }

  async function decodeKept(kept: Uint8Array[], only?: Uint8Array): Promise<void> {
    for (let i = 0; i < kept.length; i++) {
      await scan.decode(kept[i], only);
      release(kept[i]);
      kept[i] = EMPTY;
    }
  }
}

const EMPTY = new Uint8Array(0);

/** Buckets whose change count differs from `since`. */
function movedBuckets(now: Uint32Array, since: Uint32Array): number {
  let moved = 0;
  for (let b = 0; b < DIGEST_BUCKETS; b++) if (now[b] !== since[b]) moved++;
  return moved;
}

class ScanState {
  readonly result: SnapshotScan = {
    connections: [], listening: new Map(), namespaces: 0, sockets: 0, malformed: 0, confirmed: false, readMs: 0, decodeMs: 0, durationMs: 0,
  };
  sliceStart = performance.now();
  readonly #sliceMs: number;
  readonly #signal: AbortSignal | undefined;
  /** Namespace inodes as int32 (see census). */
  readonly #namespaces = new Set<number>();
  /** Listening ports first seen after connections were built: those may be theirs (a listener's fd can come later). */
  readonly #late = new Map<number, Set<number>>();

  constructor(sliceMs: number, signal: AbortSignal | undefined) {
    this.#sliceMs = sliceMs;
    this.#signal = signal;
  }

  async breathe(): Promise<void> {
    if (performance.now() - this.sliceStart < this.#sliceMs) return;
    await nextTurn();
    this.#signal?.throwIfAborted();
    this.sliceStart = performance.now();
  }

  /** Counts and the listening ports, for every record as it arrives. */
  async census(records: Uint8Array): Promise<void> {
    const result = this.result;
    const view = viewOf(records);
    const count = Math.floor(records.byteLength / SOCKET_RECORD_SIZE);
    if (records.byteLength % SOCKET_RECORD_SIZE !== 0) result.malformed++;
    for (let i = 0; i < count; i++) {
      if (i % CHECK_EVERY === CHECK_EVERY - 1) await this.breathe();
      const o = i * SOCKET_RECORD_SIZE;
      const family = records[o + Field.family];
      if (records[o + Field.type] !== SOCKET_RECORD_TYPE || (family !== 4 && family !== 6)) {
        result.malformed++;
        continue;
      }
      result.sockets++;
      // As int32: an inode above 2^31 as a number would be boxed, one heap object per record.
      const namespace = view.getInt32(o + Field.netns, true);
      if (!this.#namespaces.has(namespace)) {
        this.#namespaces.add(namespace);
        result.namespaces++;
      }
      if (records[o + SocketField.state] !== TcpState.listen) continue;
      const netns = namespace >>> 0;
      const port = view.getUint16(o + Field.localPort, true);
      let ports = result.listening.get(netns);
      if (ports === undefined) result.listening.set(netns, (ports = new Set()));
      if (ports.has(port)) continue;
      ports.add(port);
      if (result.connections.length === 0) continue;
      let late = this.#late.get(netns);
      if (late === undefined) this.#late.set(netns, (late = new Set()));
      late.add(port);
    }
  }

  /** Open sockets into connections (only those of buckets marked in `only`, when given), with the /proc scan's direction rule by the ports listening so far. */
  async decode(records: Uint8Array, only?: Uint8Array): Promise<void> {
    const view = viewOf(records);
    const count = Math.floor(records.byteLength / SOCKET_RECORD_SIZE);
    const connections = this.result.connections;
    const listening = this.result.listening;
    for (let i = 0; i < count; i++) {
      if (i % CHECK_EVERY === CHECK_EVERY - 1) await this.breathe();
      const o = i * SOCKET_RECORD_SIZE;
      if (!isOpenSocket(records, o)) continue;
      const localPort = view.getUint16(o + Field.localPort, true);
      const remotePort = view.getUint16(o + Field.remotePort, true);
      if (only !== undefined && only[digestBucket(localPort, remotePort)] === 0) continue;
      const netns = view.getUint32(o + Field.netns, true);
      connections.push({
        localAddress: addressText(records, view, o, Field.localAddress),
        localPort,
        remoteAddress: addressText(records, view, o, Field.remoteAddress),
        remotePort,
        netns,
        pid: view.getUint32(o + Field.pid, true),
        comm: commText(records, view, o),
        direction: listening.get(netns)?.has(localPort) ? "incoming" : "unknown",
        closed: false,
        // A scan's connection, not an event: the table must not take its direction over an event's.
        source: "procfs",
      });
    }
  }

  /** The open sockets that decode would build, into a digest instead. */
  async digest(records: Uint8Array, digest: ConnectionDigest): Promise<void> {
    const view = viewOf(records);
    const count = Math.floor(records.byteLength / SOCKET_RECORD_SIZE);
    for (let i = 0; i < count; i++) {
      if (i % CHECK_EVERY === CHECK_EVERY - 1) await this.breathe();
      const o = i * SOCKET_RECORD_SIZE;
      if (!isOpenSocket(records, o)) continue;
      digest.add(
        view.getInt32(o + Field.netns, true),
        addressText(records, view, o, Field.localAddress),
        view.getUint16(o + Field.localPort, true),
        addressText(records, view, o, Field.remoteAddress),
        view.getUint16(o + Field.remotePort, true),
        view.getUint32(o + Field.pid, true),
        commText(records, view, o),
      );
    }
  }

  /**
   * The table's digest as it was when this was called, with its change counts by bucket then: the
   * table's array is taken at once and never changes, so the table may change while it is digested.
   */
  async digestTable(table: Pick<ConnectionTable, "changes" | "changesByBucket" | "snapshot">, memo?: TableDigestMemo): Promise<{ digest: ConnectionDigest; changesByBucket: Uint32Array }> {
    const changes = table.changes;
    const changesByBucket = table.changesByBucket.slice();
    const known = memo?.get(table, changes);
    if (known !== undefined) return { digest: known, changesByBucket };
    const digest = new ConnectionDigest();
    // By index over the table's array: a Map iterator across awaits allocates a result per entry.
    const all = table.snapshot();
    for (let i = 0; i < all.length; i++) {
      if (i % CHECK_EVERY === CHECK_EVERY - 1) await this.breathe();
      digest.addConnection(all[i]);
    }
    memo?.set(table, changes, digest);
    return { digest, changesByBucket };
  }

  async directLateListeners(): Promise<void> {
    if (this.#late.size === 0) return;
    let n = 0;
    for (const c of this.result.connections) {
      if (++n % CHECK_EVERY === 0) await this.breathe();
      if (c.direction === "unknown" && this.#late.get(c.netns)?.has(c.localPort)) c.direction = "incoming";
    }
  }
}

/** A record the scan takes as a connection: a socket record, IPv4 or IPv6, in an open state. */
function isOpenSocket(records: Uint8Array, o: number): boolean {
  const family = records[o + Field.family];
  return OPEN[records[o + SocketField.state]] === 1 && records[o + Field.type] === SOCKET_RECORD_TYPE && (family === 4 || family === 6);
}

function viewOf(records: Uint8Array): DataView {
  return new DataView(records.buffer, records.byteOffset, records.byteLength);
}
