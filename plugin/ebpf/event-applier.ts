/**
 * Turns ordered kernel events into table changes. One race survives any ordering by time: an
 * accept() whose socket was already closed by the peer's reset can report its close first, because
 * the accept event is stamped when the syscall returns. Such closes are remembered briefly, by
 * socket identity, so the late accept is applied as opened and closed instead of lingering open.
 */
import { type Connection, connectionKey } from "../model/connection.ts";
import type { ConnectionTable } from "../table/connection-table.ts";
import type { TrackerEvent } from "./decode.ts";

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
   * Table key by socket, so a close need not build its key again (string keys were the largest cost
   * per event): inserted on open, deleted on that socket's close, reset past SOCKET_KEY_LIMIT.
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

  apply(events: readonly TrackerEvent[]): void {
    for (const event of events) {
      if (event.type === "close") this.#close(event);
      else this.#open(event);
    }
    if (events.length > 0) this.#expireOrphans(events[events.length - 1].timestampNs);
  }

  #open(event: TrackerEvent): void {
    this.opens++;
    const connection = toConnection(event);
    const key = connectionKey(connection);
    this.#table.open(connection, key);
    if (this.#keysBySocket.size >= SOCKET_KEY_LIMIT) this.#keysBySocket.clear();
    this.#keysBySocket.set(event.sockCookie, key);
    const orphan = this.#orphanCloses.get(key);
    if (orphan !== undefined && orphan.cookie === event.sockCookie) {
      this.#orphanCloses.delete(key);
      this.pairedLateOpens++;
      this.#table.close(key);
    }
  }

  #close(event: TrackerEvent): void {
    this.closes++;
    const key = this.#knownKey(event) ?? connectionKey(event);
    this.#onCloseKey?.(key);
    if (this.#table.close(key) !== undefined) return;
    if (this.#orphanCloses.size >= ORPHAN_LIMIT) {
      const oldest = this.#orphanCloses.keys().next().value;
      if (oldest !== undefined) this.#orphanCloses.delete(oldest);
    }
    this.#orphanCloses.set(key, { cookie: event.sockCookie, timestampNs: event.timestampNs });
  }

  /** The key this socket was opened under, if it still names this very connection. */
  #knownKey(event: TrackerEvent): string | undefined {
    const key = this.#keysBySocket.get(event.sockCookie);
    if (key === undefined) return undefined;
    this.#keysBySocket.delete(event.sockCookie);
    const c = this.#table.get(key);
    // A socket address is reused once freed: trust the remembered key only if the tuple agrees.
    const same = c !== undefined && c.localPort === event.localPort && c.remotePort === event.remotePort && c.netns === event.netns &&
      c.localAddress === event.localAddress && c.remoteAddress === event.remoteAddress;
    return same ? key : undefined;
  }

  #expireOrphans(nowNs: number): void {
    for (const [key, orphan] of this.#orphanCloses) {
      if (nowNs - orphan.timestampNs <= this.#orphanTtlNs) break;
      this.#orphanCloses.delete(key);
    }
  }
}

function toConnection(event: TrackerEvent): Connection {
  return {
    localAddress: event.localAddress,
    localPort: event.localPort,
    remoteAddress: event.remoteAddress,
    remotePort: event.remotePort,
    netns: event.netns,
    pid: event.pid,
    comm: event.comm,
    direction: event.type === "accept" ? "incoming" : "outgoing",
    closed: false,
    source: "ebpf",
  };
}
