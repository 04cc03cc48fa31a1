/**
 * The open connections, keyed by four-tuple and network namespace. Bounded: past the cap the
 * least recently confirmed connection is evicted (and counted). Every open and close is published
 * to subscribers in the order applied, so per-client buffers and Watch streams see one history.
 * An eviction is published as a close: the table no longer vouches for that connection, and a
 * subscriber left believing it open would hold it forever (nothing would ever close it).
 */
import { type Connection, connectionKey } from "../model/connection.ts";
import { DIGEST_BUCKETS, digestBucket } from "../model/connection-digest.ts";
import type { ConnectionChange } from "../model/backend.ts";

export interface ConnectionTableOptions {
  maxConnections: number;
}

export type OpenResult = "added" | "updated";

/** Evicted keys remembered at most (the table's cap if smaller): about 100 bytes each. */
const MAX_EVICTED_KEYS = 65_536;

export class ConnectionTable {
  /** Map order is recency order: the first entry is the least recently confirmed one. */
  readonly #open = new Map<string, Connection>();
  readonly #listeners = new Set<(change: ConnectionChange) => void>();
  readonly #max: number;
  /**
   * Keys evicted and not seen since, oldest first: their real close is expected and is counted as
   * closesOfEvicted rather than as a close of something never known. Bounded like the table.
   */
  readonly #evicted = new Map<string, true>();
  readonly #maxEvictedKeys: number;
  /** Open entries by local port: a port with none cannot hold a given tuple, no key needed to know. */
  readonly #byLocalPort = new Uint32Array(65_536);
  /**
   * The open connections as one array, kept until the next change. Reports copy the table on
   * every call otherwise: at 10k connections an 80 KB array per Report that V8 learned to
   * allocate straight into the old generation, and with it collections in the Report's tail.
   */
  #snapshot: readonly Connection[] | undefined;
  evictions = 0;
  /** Entries removed, by close or eviction: lets a reconcile tell whether the table lost any while it ran. */
  deletions = 0;
  /** Entries added, changed or removed: a scan compared with the table holds only while this stays put. */
  changes = 0;
  /** `changes` by digest bucket (digestBucket of the ports): a scan's comparison holds for a bucket while its count stays put. */
  readonly changesByBucket = new Uint32Array(DIGEST_BUCKETS);
  closesOfUnknown = 0;
  /** Real closes of connections evicted earlier (already published as closed then, so not again). */
  closesOfEvicted = 0;

  constructor(options: ConnectionTableOptions) {
    if (!(options.maxConnections > 0)) throw new RangeError("maxConnections must be positive");
    this.#max = options.maxConnections;
    this.#maxEvictedKeys = Math.min(options.maxConnections, MAX_EVICTED_KEYS);
  }

  get size(): number {
    return this.#open.size;
  }

  has(key: string): boolean {
    return this.#open.has(key);
  }

  get(key: string): Connection | undefined {
    return this.#open.get(key);
  }

  /**
   * Adds a connection, or refreshes one already known: known pid/comm/direction are never replaced
   * by unknown ones, because a /proc refresh knows less than the eBPF event that opened it.
   */
  open(connection: Connection, key = connectionKey(connection)): OpenResult {
    const known = this.#open.get(key);
    this.#changed(connection);
    if (known !== undefined) {
      this.#open.delete(key);
      this.#open.set(key, mergeKnown(known, connection));
      return "updated";
    }
    const added = connection.closed ? { ...connection, closed: false } : connection;
    if (this.#evicted.size !== 0) this.#evicted.delete(key);
    this.#open.set(key, added);
    this.#byLocalPort[added.localPort]++;
    this.#publish({ type: "open", connection: added });
    if (this.#open.size > this.#max) this.#evictOldest();
    return "added";
  }

  /**
   * A scan's view of a known connection: merged as open() merges it, but the entry keeps its place
   * and nothing is touched when the merge changes nothing, which is nearly always. A reconcile
   * confirms every entry it keeps, so moving each to the freshest place would only re-sort them at
   * the cost of a delete, an insert and a copy per connection (the bulk of a 200k reconcile).
   */
  confirm(connection: Connection, key: string): "unchanged" | "updated" | "unknown" {
    const known = this.#open.get(key);
    if (known === undefined) return "unknown";
    if (!mergeChanges(known, connection)) return "unchanged";
    this.#changed(known);
    this.#open.set(key, mergeKnown(known, connection));
    return "updated";
  }

  /** Closes a known connection; a close of an unknown one is counted and reported as false. */
  close(key: string): Connection | undefined {
    const known = this.#open.get(key);
    if (known === undefined) {
      if (this.#evicted.size !== 0 && this.#evicted.delete(key)) this.closesOfEvicted++;
      else this.closesOfUnknown++;
      return undefined;
    }
    this.#open.delete(key);
    this.deletions++;
    this.#changed(known);
    this.#byLocalPort[known.localPort]--;
    const closed = closedCopy(known);
    this.#publish({ type: "close", connection: closed });
    return closed;
  }

  /** Whether any open entry has this local port (if none, no entry has a tuple with it). */
  hasLocalPort(port: number): boolean {
    return this.#byLocalPort[port] !== 0;
  }

  /**
   * A connection that opens and closes within one batch of changes: subscribers see its open
   * (passOpen) and later its close (passClose) as if it had been added and closed, and the map is
   * never touched. Only for a tuple the table does not hold (see hasLocalPort).
   */
  passOpen(connection: Connection): void {
    this.#publish({ type: "open", connection });
  }

  passClose(connection: Connection): void {
    this.#publish({ type: "close", connection: closedCopy(connection) });
  }

  /** The open connections in table order; the same array until the table changes (never modify it). */
  snapshot(): readonly Connection[] {
    if (this.#snapshot !== undefined) return this.#snapshot;
    const all = new Array<Connection>(this.#open.size);
    let i = 0;
    for (const c of this.#open.values()) all[i++] = c;
    this.#snapshot = all;
    return all;
  }

  values(): IterableIterator<Connection> {
    return this.#open.values();
  }

  keys(): IterableIterator<string> {
    return this.#open.keys();
  }

  entries(): IterableIterator<[string, Connection]> {
    return this.#open.entries();
  }

  subscribe(listener: (change: ConnectionChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  get subscriberCount(): number {
    return this.#listeners.size;
  }

  #evictOldest(): void {
    const oldest = this.#open.keys().next();
    if (oldest.done) return;
    const key = oldest.value;
    const evicted = this.#open.get(key)!;
    this.evictions++;
    this.#byLocalPort[evicted.localPort]--;
    this.#open.delete(key);
    this.deletions++;
    this.#changed(evicted);
    if (this.#evicted.size >= this.#maxEvictedKeys) this.#evicted.delete(this.#evicted.keys().next().value!);
    this.#evicted.set(key, true);
    this.#publish({ type: "close", connection: closedCopy(evicted) });
  }

  /** Every entry added, changed or removed: the cached array goes, and the change is counted (in all and by its bucket). */
  #changed(c: Pick<Connection, "localPort" | "remotePort">): void {
    this.#snapshot = undefined;
    this.changes++;
    this.changesByBucket[digestBucket(c.localPort, c.remotePort)]++;
  }

  #publish(change: ConnectionChange): void {
    for (const listener of this.#listeners) listener(change);
  }
}

/** Field by field: on this path (every close) an object spread costs several times more. */
function closedCopy(c: Connection): Connection {
  return {
    localAddress: c.localAddress, localPort: c.localPort, remoteAddress: c.remoteAddress, remotePort: c.remotePort,
    netns: c.netns, pid: c.pid, comm: c.comm, direction: c.direction, closed: true, source: c.source,
  };
}

/** Whether mergeKnown(known, fresh) would differ from known, without building it. */
function mergeChanges(known: Connection, fresh: Connection): boolean {
  const freshIsEvent = fresh.source === "ebpf";
  if (fresh.pid !== 0 && (fresh.pid !== known.pid || fresh.comm !== known.comm)) return true;
  if (fresh.direction !== "unknown" && (freshIsEvent || known.direction === "unknown") && fresh.direction !== known.direction) return true;
  return freshIsEvent && known.source !== "ebpf";
}

/** An eBPF event is the authority on direction; otherwise a known value is never lost to an unknown one. */
function mergeKnown(known: Connection, fresh: Connection): Connection {
  const freshIsEvent = fresh.source === "ebpf";
  const directionFromFresh = fresh.direction !== "unknown" && (freshIsEvent || known.direction === "unknown");
  return {
    ...known,
    pid: fresh.pid !== 0 ? fresh.pid : known.pid,
    comm: fresh.pid !== 0 ? fresh.comm : known.comm,
    direction: directionFromFresh ? fresh.direction : known.direction,
    source: freshIsEvent ? "ebpf" : known.source,
  };
}
