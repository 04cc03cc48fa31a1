/**
 * Turns ordered kernel records into table changes, reading each record in place.
 *
 * A connection whose open and close arrive in the same release (a short-lived one, the bulk of a
 * connection storm) goes to subscribers without entering the table, when the table cannot hold its
 * tuple (no entry on its local port): no key is built and the map is not touched, which was most
 * of the cost per event at full churn.
 *
 * One race survives any ordering by time: a peer's reset can close a socket still in the accept
 * queue. The kernel then gives close (in softirq, at the reset), accept (when accept() returns),
 * and close again (the BPF program re-reports a socket that is already closed when accepted), as
 * recorded in test/kernel/reset-race.test.ts. The accept pairs with the close after it; the one
 * before it is of a connection nobody had opened yet. So a close of an unknown connection is not
 * counted at once: it waits, by socket cookie, for up to orphanCloseTtlMs; an accept of that very
 * socket retires it silently, and only one still waiting at the end counts as `closesOfUnknown`.
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
  /** Whether onCloseKey currently wants keys (a /proc scan is running): pairs, which build no key, form only when it says no. */
  wantsCloseKeys?: () => boolean;
}

export class EventApplier {
  readonly #table: ConnectionTable;
  readonly #orphanTtlNs: number;
  readonly #onCloseKey: ((key: string) => void) | undefined;
  readonly #wantsCloseKeys: () => boolean;
  /** Per release: open records by socket slot (open addressing, -1 empty), and which records pair up. */
  #slots = new Int32Array(0);
  #slotIndex = new Int32Array(0);
  #pairedWith = new Int32Array(0);
  #pairConnections: Array<Connection | undefined> = [];
  /**
   * Closes of unknown connections, by socket cookie, oldest first: inserted on such a close,
   * retired by an accept of the same socket, counted as unknown when they expire (age or cap).
   */
  readonly #orphanCloses = new Map<number, { key: string; timestampNs: number }>();
  /**
   * Table key by socket slot (record.ts sockSlot), so a close need not build its key again (string
   * keys were the largest cost per event): inserted on open, deleted on that socket's close, reset
   * past SOCKET_KEY_LIMIT. A slot shared by two sockets costs the second close a key build, nothing more.
   */
  readonly #keysBySocket = new Map<number, string>();
  opens = 0;
  closes = 0;
  /** Accepts of sockets a reset had already closed: their early close was retired, not counted. */
  pairedLateOpens = 0;
  /** Connections opened and closed within one release, passed to subscribers without the table. */
  passedThrough = 0;

  constructor(table: ConnectionTable, options: EventApplierOptions = { orphanCloseTtlMs: 2000 }) {
    this.#table = table;
    this.#orphanTtlNs = options.orphanCloseTtlMs * 1e6;
    this.#onCloseKey = options.onCloseKey;
    this.#wantsCloseKeys = options.wantsCloseKeys ?? (() => options.onCloseKey !== undefined);
  }

  apply(records: ReleasedRecords): void {
    const { bytes, view, count } = records;
    const paired = this.#findPairs(records);
    for (let i = 0; i < count; i++) {
      const o = i * EVENT_SIZE;
      const partner = paired === undefined ? -1 : paired[i];
      // Decided here, not when pairing: a record applied earlier in this release may have put an
      // entry on this port, and then the pair goes through the table like any other.
      if (partner > i && !this.#table.hasLocalPort(view.getUint16(o + Field.localPort, true))) {
        if (this.#orphanCloses.size > 0) this.#retireOrphan(bytes, view, o, undefined);
        this.#passOpen(i, this.#connection(bytes, view, o));
      } else if (partner >= 0 && partner < i) {
        this.#passClose(partner);
      } else if (bytes[o + Field.type] === EventType.close) {
        this.#close(bytes, view, o);
      } else {
        if (partner > i) paired![partner] = -1;
        this.#open(bytes, view, o);
      }
    }
    if (count > 0 && this.#orphanCloses.size > 0) this.#expireOrphans(timestampNs(view, (count - 1) * EVENT_SIZE));
  }

  /**
   * For each record, the index of the record it pairs with (an open and the close of the same
   * socket and tuple, later in this release), or -1; undefined when nothing pairs. Pairing is off
   * while close keys are wanted.
   */
  #findPairs(records: ReleasedRecords): Int32Array | undefined {
    const { bytes, view, count } = records;
    if (count < 2 || this.#wantsCloseKeys()) return undefined;
    let size = this.#slots.length;
    if (size < count * 2) {
      size = 1 << Math.ceil(Math.log2(count * 2));
      this.#slots = new Int32Array(size);
      this.#slotIndex = new Int32Array(size);
    }
    if (this.#pairedWith.length < count) this.#pairedWith = new Int32Array(Math.max(count, 2 * this.#pairedWith.length));
    const slots = this.#slots;
    const slotIndex = this.#slotIndex;
    const pairedWith = this.#pairedWith;
    slotIndex.fill(-1);
    pairedWith.fill(-1, 0, count);
    const mask = size - 1;
    let found = false;
    for (let i = 0; i < count; i++) {
      const o = i * EVENT_SIZE;
      const slot = sockSlot(view, o);
      let h = Math.imul(slot, 0x9e3779b1) & mask;
      while (slotIndex[h] !== -1 && slots[h] !== slot) h = (h + 1) & mask;
      if (bytes[o + Field.type] !== EventType.close) {
        // A later open on the same slot replaces the earlier one: closes pair with the latest open.
        slots[h] = slot;
        slotIndex[h] = i;
        continue;
      }
      const open = slotIndex[h];
      if (open === -1 || pairedWith[open] !== -1 || !sameSocket(view, open * EVENT_SIZE, o)) continue;
      pairedWith[open] = i;
      pairedWith[i] = open;
      found = true;
    }
    return found ? pairedWith : undefined;
  }

  #passOpen(index: number, connection: Connection): void {
    this.opens++;
    this.#pairConnections[index] = connection;
    this.#table.passOpen(connection);
  }

  #passClose(openIndex: number): void {
    const connection = this.#pairConnections[openIndex]!;
    this.#pairConnections[openIndex] = undefined;
    this.closes++;
    this.passedThrough++;
    this.#table.passClose(connection);
  }

  #connection(bytes: Uint8Array, view: DataView, o: number): Connection {
    return {
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
  }

  #open(bytes: Uint8Array, view: DataView, o: number): void {
    this.opens++;
    const connection = this.#connection(bytes, view, o);
    const key = connectionKey(connection);
    this.#table.open(connection, key);
    if (this.#keysBySocket.size >= SOCKET_KEY_LIMIT) this.#keysBySocket.clear();
    this.#keysBySocket.set(sockSlot(view, o), key);
    if (this.#orphanCloses.size > 0) this.#retireOrphan(bytes, view, o, key);
  }

  /** An open of a socket whose close came first (reset before accept): that close was not of an unknown connection. */
  #retireOrphan(bytes: Uint8Array, view: DataView, o: number, key: string | undefined): void {
    const cookie = sockCookie(view, o);
    const orphan = this.#orphanCloses.get(cookie);
    if (orphan === undefined) return;
    if ((key ?? tupleKeyOf(bytes, view, o)) !== orphan.key) return;
    this.#orphanCloses.delete(cookie);
    this.pairedLateOpens++;
  }


  #close(bytes: Uint8Array, view: DataView, o: number): void {
    this.closes++;
    const known = this.#knownKey(bytes, view, o);
    if (known !== undefined) {
      // The hot path: the table holds it (#knownKey checked), one map operation.
      this.#onCloseKey?.(known);
      this.#table.close(known);
      return;
    }
    const key = tupleKeyOf(bytes, view, o);
    this.#onCloseKey?.(key);
    if (this.#table.has(key)) {
      this.#table.close(key);
      return;
    }
    if (this.#orphanCloses.size >= ORPHAN_LIMIT) {
      const [oldest] = this.#orphanCloses;
      if (oldest !== undefined) this.#countUnknown(oldest[0], oldest[1].key);
    }
    const cookie = sockCookie(view, o);
    // The same socket closed twice with no open between: the first was unknown for good.
    const earlier = this.#orphanCloses.get(cookie);
    if (earlier !== undefined) this.#countUnknown(cookie, earlier.key);
    this.#orphanCloses.set(cookie, { key, timestampNs: timestampNs(view, o) });
  }

  /** A close that no open claimed: counted by the table as a close of an unknown connection. */
  #countUnknown(cookie: number, key: string): void {
    this.#orphanCloses.delete(cookie);
    // A new connection on the same tuple may be open by now: it must not be closed for this.
    if (this.#table.has(key)) this.#table.closesOfUnknown++;
    else this.#table.close(key);
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
    for (const [cookie, orphan] of this.#orphanCloses) {
      if (nowNs - orphan.timestampNs <= this.#orphanTtlNs) break;
      this.#countUnknown(cookie, orphan.key);
    }
  }
}

/** The table key of a record's tuple, built from its fields. */
function tupleKeyOf(bytes: Uint8Array, view: DataView, o: number): string {
  return tupleKey(
    view.getUint32(o + Field.netns, true),
    addressText(bytes, view, o, Field.localAddress),
    view.getUint16(o + Field.localPort, true),
    addressText(bytes, view, o, Field.remoteAddress),
    view.getUint16(o + Field.remotePort, true),
  );
}

/** Same socket cookie and same tuple (namespace, ports, address bytes) in two records. */
function sameSocket(view: DataView, a: number, b: number): boolean {
  for (let k = Field.cookie; k < Field.cookie + 8; k += 4) if (view.getUint32(a + k, true) !== view.getUint32(b + k, true)) return false;
  if (view.getUint32(a + Field.netns, true) !== view.getUint32(b + Field.netns, true)) return false;
  if (view.getUint32(a + Field.localPort, true) !== view.getUint32(b + Field.localPort, true)) return false; // both ports
  for (let k = Field.localAddress; k < Field.remoteAddress + 16; k += 4) if (view.getUint32(a + k, true) !== view.getUint32(b + k, true)) return false;
  return view.getUint8(a + Field.family) === view.getUint8(b + Field.family);
}
