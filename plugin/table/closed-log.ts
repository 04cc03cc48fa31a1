/**
 * The closes not yet seen by every client, in order, by sequence number. Stored as columns (typed
 * arrays, and arrays of the shared address and name strings) rather than one object per close:
 * under churn a client reading once a second keeps tens of thousands of closes alive, and as
 * objects they all lived long enough to be promoted and collected as old ones, which cost several
 * times the rest of the event path. Connection objects are made again when a client takes them.
 */
import type { Connection, Direction, SourceKind } from "../model/connection.ts";

const DIRECTIONS: readonly Direction[] = ["unknown", "incoming", "outgoing"];
const SOURCES: readonly SourceKind[] = ["ebpf", "procfs"];
const INITIAL_CAPACITY = 1024;

export class ClosedLog {
  /** Sequence number of the oldest entry held, and of the next one to be appended. */
  #first = 0;
  #next = 0;
  #mask = INITIAL_CAPACITY - 1;
  #localAddress: string[] = new Array<string>(INITIAL_CAPACITY).fill("");
  #remoteAddress: string[] = new Array<string>(INITIAL_CAPACITY).fill("");
  #comm: string[] = new Array<string>(INITIAL_CAPACITY).fill("");
  #localPort = new Uint16Array(INITIAL_CAPACITY);
  #remotePort = new Uint16Array(INITIAL_CAPACITY);
  #netns = new Uint32Array(INITIAL_CAPACITY);
  #pid = new Uint32Array(INITIAL_CAPACITY);
  /** Direction index in the low two bits, source index in the third. */
  #kind = new Uint8Array(INITIAL_CAPACITY);

  /** Sequence number of the oldest entry held. */
  get first(): number {
    return this.#first;
  }

  /** Sequence number the next append gets. */
  get next(): number {
    return this.#next;
  }

  get size(): number {
    return this.#next - this.#first;
  }

  append(c: Connection): void {
    if (this.#next - this.#first > this.#mask) this.#grow();
    const i = this.#next & this.#mask;
    this.#localAddress[i] = c.localAddress;
    this.#remoteAddress[i] = c.remoteAddress;
    this.#comm[i] = c.comm;
    this.#localPort[i] = c.localPort;
    this.#remotePort[i] = c.remotePort;
    this.#netns[i] = c.netns;
    this.#pid[i] = c.pid;
    this.#kind[i] = Math.max(0, DIRECTIONS.indexOf(c.direction)) | (c.source === "procfs" ? 4 : 0);
    this.#next++;
  }

  /** Forgets every entry before sequence number `sequence`. */
  dropBefore(sequence: number): void {
    if (sequence > this.#first) this.#first = Math.min(sequence, this.#next);
  }

  /** The entries from sequence number `from` on, as closed connections. */
  connectionsFrom(from: number): Connection[] {
    const start = Math.max(from, this.#first);
    const out = new Array<Connection>(Math.max(0, this.#next - start));
    for (let s = start, k = 0; s < this.#next; s++, k++) {
      const i = s & this.#mask;
      const kind = this.#kind[i];
      out[k] = {
        localAddress: this.#localAddress[i], localPort: this.#localPort[i], remoteAddress: this.#remoteAddress[i], remotePort: this.#remotePort[i],
        netns: this.#netns[i], pid: this.#pid[i], comm: this.#comm[i], direction: DIRECTIONS[kind & 3], closed: true, source: SOURCES[kind >> 2],
      };
    }
    return out;
  }

  /** Doubles the room, keeping every entry at its sequence number's place under the new mask. */
  #grow(): void {
    const capacity = (this.#mask + 1) * 2;
    const mask = capacity - 1;
    const move = <T extends { [i: number]: unknown }>(from: T, to: T): T => {
      for (let s = this.#first; s < this.#next; s++) to[s & mask] = from[s & this.#mask];
      return to;
    };
    this.#localAddress = move(this.#localAddress, new Array<string>(capacity).fill(""));
    this.#remoteAddress = move(this.#remoteAddress, new Array<string>(capacity).fill(""));
    this.#comm = move(this.#comm, new Array<string>(capacity).fill(""));
    this.#localPort = move(this.#localPort, new Uint16Array(capacity));
    this.#remotePort = move(this.#remotePort, new Uint16Array(capacity));
    this.#netns = move(this.#netns, new Uint32Array(capacity));
    this.#pid = move(this.#pid, new Uint32Array(capacity));
    this.#kind = move(this.#kind, new Uint8Array(capacity));
    this.#mask = mask;
  }
}
