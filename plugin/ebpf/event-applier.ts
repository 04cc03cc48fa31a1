/**
 * Turns ordered kernel records into table changes, reading each record in place. One race survives
 * any ordering by time: an accept() whose socket was already closed by the peer's reset can report
 * its close first, because the accept event is stamped when the syscall returns. Such closes are
 * remembered briefly, by socket identity, so the late accept is applied as opened and closed
 * instead of lingering open.
 */
import { type Connection, connectionKey, tupleKey } from "../model/connection.ts";
import type { ConnectionTable } from "../table/connection-table.ts";
import { addressText, commText, EVENT_SIZE, EventType, Field, sockCookie, sockSlot, timestampNs } from "./record.ts";
import type { ReleasedRecords } from "./reorder-buffer.ts";

const ORPHAN_LIMIT = 4096;
/** Past this many sockets remembered, start over: closes then build their key from the tuple. */
const SOCKET_KEY_LIMIT = 262_144;

export interface EventApplierOptions {
  /** How long a close of an unknown connection may still pair with its late open. */
  orphanCloseTtlMs: number;
  /** Told the key of every close applied, known or not. */
  onCloseKey?: (key: string) => void;
}

export class EventApplier {
  readonly #table: ConnectionTable;
  readonly #orphanTtlNs: number;
  readonly #onCloseKey: ((key: string) => void) | undefined;
  /** Closes of unknown connections, by key: inserted on such a close, deleted when paired, expired by age or cap. */
  readonly #orphanCloses = new Map<string, { cookie: number; timestampNs: number }>();
  /**
   * Table key by socket slot (record.ts sockSlot), so a close need not build its key again (string
   * keys were the largest cost per event): inserted on open, deleted on that socket's close, reset
   * past SOCKET_KEY_LIMIT. A slot shared by two sockets costs the second close a key build, nothing more.
   */
  readonly #keysBySocket = new Map<number, string>();
  opens = 0;
  closes = 0;
  pairedLateOpens = 0;

  constructor(table: ConnectionTable, options: EventApplierOptions = { orphanCloseTtlMs: 2000 }) {
    this.#table = table;
    this.#orphanTtlNs = options.orphanCloseTtlMs * 1e6;
    this.#onCloseKey = options.onCloseKey;
  }

  apply(records: ReleasedRecords): void {
    const { bytes, view, count } = records;
    for (let i = 0; i < count; i++) {
      const o = i * EVENT_SIZE;
      if (bytes[o + Field.type] === EventType.close) this.#close(bytes, view, o);
      else this.#open(bytes, view, o);
    }
    if (count > 0 && this.#orphanCloses.size > 0) this.#expireOrphans(timestampNs(view, (count - 1) * EVENT_SIZE));
  }

  #open(bytes: Uint8Array, view: DataView, o: number): void {
    this.opens++;
    const connection: Connection = {
      localAddress: addressText(bytes, view, o, Field.localAddress),
      localPort: view.getUint16(o + Field.localPort, true),
      remoteAddress: addressText(bytes, view, o, Field.remoteAddress),
      remotePort: view.getUint16(o + Field.remotePort, true),
      netns: view.getUint32(o + Field.netns, true),
      pid: view.getUint32(o + Field.pid, true),
      comm: commText(bytes, view, o),
      direction: bytes[o + Field.type] === EventType.accept ? "incoming" : "outgoing",
      closed: false,
      source: "ebpf",
    };
    const key = connectionKey(connection);
    this.#table.open(connection, key);
    if (this.#keysBySocket.size >= SOCKET_KEY_LIMIT) this.#keysBySocket.clear();
    this.#keysBySocket.set(sockSlot(view, o), key);
    if (this.#orphanCloses.size === 0) return;
    const orphan = this.#orphanCloses.get(key);
    if (orphan !== undefined && orphan.cookie === sockCookie(view, o)) {
      this.#orphanCloses.delete(key);
      this.pairedLateOpens++;
      this.#table.close(key);
    }
  }

  #close(bytes: Uint8Array, view: DataView, o: number): void {
    this.closes++;
    const key = this.#knownKey(bytes, view, o) ?? tupleKey(
      view.getUint32(o + Field.netns, true),
      addressText(bytes, view, o, Field.localAddress),
      view.getUint16(o + Field.localPort, true),
      addressText(bytes, view, o, Field.remoteAddress),
      view.getUint16(o + Field.remotePort, true),
    );
    this.#onCloseKey?.(key);
    if (this.#table.close(key) !== undefined) return;
    if (this.#orphanCloses.size >= ORPHAN_LIMIT) {
      const oldest = this.#orphanCloses.keys().next().value;
      if (oldest !== undefined) this.#orphanCloses.delete(oldest);
    }
    this.#orphanCloses.set(key, { cookie: sockCookie(view, o), timestampNs: timestampNs(view, o) });
  }

  /** The key this socket was opened under, if it still names this very connection. */
  #knownKey(bytes: Uint8Array, view: DataView, o: number): string | undefined {
    const slot = sockSlot(view, o);
    const key = this.#keysBySocket.get(slot);
    if (key === undefined) return undefined;
    this.#keysBySocket.delete(slot);
    const c = this.#table.get(key);
    // A socket address is reused once freed, and slots are shared: trust the key only if the tuple agrees.
    const same = c !== undefined && c.localPort === view.getUint16(o + Field.localPort, true) &&
      c.remotePort === view.getUint16(o + Field.remotePort, true) && c.netns === view.getUint32(o + Field.netns, true) &&
      c.localAddress === addressText(bytes, view, o, Field.localAddress) &&
      c.remoteAddress === addressText(bytes, view, o, Field.remoteAddress);
    return same ? key : undefined;
  }

  #expireOrphans(nowNs: number): void {
    for (const [key, orphan] of this.#orphanCloses) {
      if (nowNs - orphan.timestampNs <= this.#orphanTtlNs) break;
      this.#orphanCloses.delete(key);
    }
  }
}
