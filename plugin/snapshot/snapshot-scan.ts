/**
 * One snapshot of the host's TCP sockets turned into what a /proc scan gives (../procfs/scan.ts):
 * the established connections of every namespace with their owners, the listening ports per
 * namespace for direction. The kernel side filters nothing but the protocol; here the states are
 * picked as the /proc scan picks its rows (OPEN_TCP_STATES: established or half-closed).
 *
 * Decoding runs on the event loop in slices of at most `sliceMs`: 200k records are ~50 ms of work.
 */
import { setImmediate as nextTurn } from "node:timers/promises";
import type { Connection } from "../model/connection.ts";
import { OPEN_TCP_STATES, TcpState } from "../procfs/tcp-table.ts";
import { addressText, commText, Field, SOCKET_RECORD_SIZE, SOCKET_RECORD_TYPE, SocketField } from "./socket-records.ts";
import type { SocketSnapshot } from "./socket-snapshot.ts";

export interface SnapshotScan {
  /** Open sockets (OPEN_TCP_STATES, as the /proc scan takes them), one per local socket, in every namespace. */
  connections: Connection[];
  /** Listening TCP ports (IPv4 and IPv6) per network namespace inode. */
  listening: Map<number, Set<number>>;
  /** Namespaces with at least one TCP socket held by a process. */
  namespaces: number;
  /** TCP sockets in the snapshot, every state. */
  sockets: number;
  /** Records of an unknown type or family, or a trailing partial one: counted, never thrown. */
  malformed: number;
  /** Time in the kernel walk and its read (off the event loop), then in decoding (on it). */
  readMs: number;
  decodeMs: number;
  durationMs: number;
}

export interface SnapshotScanOptions {
  sliceMs?: number;
  /** Abandons the decoding at its next slice (rejects with the signal's reason). */
  signal?: AbortSignal;
}

const DEFAULT_SLICE_MS = 8;
/** By TCP state: taken as a connection. The /proc scan's own set: both sources agree on what is open. */
const OPEN = new Uint8Array(256);
for (const state of OPEN_TCP_STATES) OPEN[state] = 1;
/** Records between two clock reads. */
const CHECK_EVERY = 512;

export async function scanSockets(snapshot: Pick<SocketSnapshot, "read">, options: SnapshotScanOptions = {}): Promise<SnapshotScan> {
  const started = performance.now();
  const sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
  const signal = options.signal;
  signal?.throwIfAborted();
  const records = await snapshot.read();
  const read = performance.now();
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  const count = Math.floor(records.byteLength / SOCKET_RECORD_SIZE);
  const result: SnapshotScan = {
    connections: [], listening: new Map(), namespaces: 0, sockets: 0,
    malformed: records.byteLength % SOCKET_RECORD_SIZE === 0 ? 0 : 1, readMs: read - started, decodeMs: 0, durationMs: 0,
  };
  let sliceStart = performance.now();
  const breathe = async () => {
    if (performance.now() - sliceStart < sliceMs) return;
    await nextTurn();
    signal?.throwIfAborted();
    sliceStart = performance.now();
  };

  // Listening ports first: a server's listening socket may come after its accepted ones.
  const namespaces = new Set<number>();
  for (let i = 0; i < count; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) await breathe();
    const o = i * SOCKET_RECORD_SIZE;
    const family = records[o + Field.family];
    if (records[o + Field.type] !== SOCKET_RECORD_TYPE || (family !== 4 && family !== 6)) {
      result.malformed++;
      continue;
    }
    result.sockets++;
    const netns = view.getUint32(o + Field.netns, true);
    namespaces.add(netns);
    if (records[o + SocketField.state] !== TcpState.listen) continue;
    let ports = result.listening.get(netns);
    if (ports === undefined) result.listening.set(netns, (ports = new Set()));
    ports.add(view.getUint16(o + Field.localPort, true));
  }
  result.namespaces = namespaces.size;

  const connections = result.connections;
  for (let i = 0; i < count; i++) {
    if (i % CHECK_EVERY === CHECK_EVERY - 1) await breathe();
    const o = i * SOCKET_RECORD_SIZE;
    if (OPEN[records[o + SocketField.state]] === 0 || records[o + Field.type] !== SOCKET_RECORD_TYPE) continue;
    const family = records[o + Field.family];
    if (family !== 4 && family !== 6) continue;
    const netns = view.getUint32(o + Field.netns, true);
    const localPort = view.getUint16(o + Field.localPort, true);
    const pid = view.getUint32(o + Field.pid, true);
    connections.push({
      localAddress: addressText(records, view, o, Field.localAddress),
      localPort,
      remoteAddress: addressText(records, view, o, Field.remoteAddress),
      remotePort: view.getUint16(o + Field.remotePort, true),
      netns,
      pid,
      comm: commText(records, view, o),
      direction: result.listening.get(netns)?.has(localPort) ? "incoming" : "unknown",
      closed: false,
      // A scan's connection, not an event: the table must not take its direction over an event's.
      source: "procfs",
    });
  }
  const end = performance.now();
  result.decodeMs = end - read;
  result.durationMs = end - started;
  return result;
}
