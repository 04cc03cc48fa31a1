/**
 * Hold-back window against cross-CPU reordering (scope#2334, #2827; fixed upstream by a hold-back in
 * scope PR#3653). Records wait until they are `windowNs` old on the kernel's monotonic clock, then
 * leave in timestamp order. Arrival out of timestamp order is normal here, not a reason to die.
 *
 * Records stay bytes: each batch is copied into one growing buffer with its timestamps beside it,
 * because an object per event, held for the window, was most of the tracker's CPU at full churn
 * (allocation, and copying survivors on every young-generation collection).
 */
import { EVENT_SIZE, isWellFormed, timestampNs } from "./record.ts";

/** Released records, contiguous and in timestamp order; valid until the next push or release. */
export interface ReleasedRecords {
  bytes: Uint8Array;
  view: DataView;
  count: number;
}

const NONE: ReleasedRecords = { bytes: new Uint8Array(0), view: new DataView(new ArrayBuffer(0)), count: 0 };
const INITIAL_CAPACITY = 4096;

export class ReorderBuffer {
  readonly #windowNs: number;
  /** Pending records are #bytes[#start..#end) (in records), their timestamps #times[#start..#end). */
  #bytes = new Uint8Array(INITIAL_CAPACITY * EVENT_SIZE);
  #times = new Float64Array(INITIAL_CAPACITY);
  /** Same size as the above: the target of a reordering, then swapped in. */
  #spareBytes = new Uint8Array(INITIAL_CAPACITY * EVENT_SIZE);
  #spareTimes = new Float64Array(INITIAL_CAPACITY);
  #start = 0;
  #end = 0;
  #sorted = true;
  #lastReleasedNs = 0;
  /** Records that arrived before an older one and were put back in order. */
  heldBack = 0;
  /** Records older than something already released: applied anyway, in arrival order. */
  late = 0;
  /** Records of unknown type or family, and trailing partial records: dropped and counted. */
  malformed = 0;
  /** Batches whose length is not a whole number of records: the sender's record size is not ours. */
  partialBatches = 0;

  constructor(windowMs: number) {
    this.#windowNs = windowMs * 1e6;
  }

  get pending(): number {
    return this.#end - this.#start;
  }

  /** Takes a copy of the batch's well-formed records; returns how many that was. */
  push(batch: Uint8Array): number {
    const records = Math.floor(batch.byteLength / EVENT_SIZE);
    if (batch.byteLength % EVENT_SIZE !== 0) {
      this.malformed++;
      this.partialBatches++;
    }
    this.#makeRoom(records);
    const first = this.#end;
    let wellFormed = true;
    for (let i = 0; i < records && wellFormed; i++) wellFormed = isWellFormed(batch, i * EVENT_SIZE);
    if (wellFormed) {
      this.#bytes.set(batch.subarray(0, records * EVENT_SIZE), first * EVENT_SIZE);
      this.#end += records;
    } else {
      for (let i = 0; i < records; i++) {
        const o = i * EVENT_SIZE;
        if (!isWellFormed(batch, o)) {
          this.malformed++;
          continue;
        }
        this.#bytes.set(batch.subarray(o, o + EVENT_SIZE), this.#end * EVENT_SIZE);
        this.#end++;
      }
    }
    const view = new DataView(this.#bytes.buffer);
    let previous = first > this.#start ? this.#times[first - 1] : -Infinity;
    for (let r = first; r < this.#end; r++) {
      const ts = timestampNs(view, r * EVENT_SIZE);
      if (ts < previous) {
        this.#sorted = false;
        this.heldBack++;
      }
      if (ts < this.#lastReleasedNs) this.late++;
      this.#times[r] = ts;
      previous = ts;
    }
    return this.#end - first;
  }

  /** Releases, in timestamp order, every record at least one window older than `nowNs` (all if nowNs is undefined). */
  release(nowNs?: number): ReleasedRecords {
    if (this.#end === this.#start) return NONE;
    if (!this.#sorted) this.#sort();
    let end = this.#end;
    if (nowNs !== undefined) {
      const cutoff = nowNs - this.#windowNs;
      end = this.#start;
      while (end < this.#end && this.#times[end] <= cutoff) end++;
    }
    if (end === this.#start) return NONE;
    const bytes = this.#bytes.subarray(this.#start * EVENT_SIZE, end * EVENT_SIZE);
    const newest = this.#times[end - 1];
    if (newest > this.#lastReleasedNs) this.#lastReleasedNs = newest;
    this.#start = end;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), count: bytes.byteLength / EVENT_SIZE };
  }

  /** Room for `records` more at the end: moves the pending ones to the front, or grows. */
  #makeRoom(records: number): void {
    const capacity = this.#times.length;
    if (this.#end + records <= capacity) return;
    const pending = this.#end - this.#start;
    if (pending + records <= capacity / 2) {
      this.#bytes.copyWithin(0, this.#start * EVENT_SIZE, this.#end * EVENT_SIZE);
      this.#times.copyWithin(0, this.#start, this.#end);
    } else {
      let grown = capacity * 2;
      while (grown < (pending + records) * 2) grown *= 2;
      const bytes = new Uint8Array(grown * EVENT_SIZE);
      const times = new Float64Array(grown);
      bytes.set(this.#bytes.subarray(this.#start * EVENT_SIZE, this.#end * EVENT_SIZE));
      times.set(this.#times.subarray(this.#start, this.#end));
      this.#bytes = bytes;
      this.#times = times;
      this.#spareBytes = new Uint8Array(grown * EVENT_SIZE);
      this.#spareTimes = new Float64Array(grown);
    }
    this.#start = 0;
    this.#end = pending;
  }

  /**
   * Puts the pending records in timestamp order, equal timestamps keeping ring-buffer order. They
   * arrive nearly sorted (a record is late by the few that another CPU reserved meanwhile), so an
   * insertion sort of their indexes is linear in practice; past a budget it becomes a full sort.
   */
  #sort(): void {
    const n = this.#end - this.#start;
    const times = this.#times;
    const base = this.#start;
    let order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = base + i;
    let budget = 16 * n + 1024;
    for (let i = 1; i < n && budget > 0; i++) {
      const index = order[i];
      const ts = times[index];
      let j = i - 1;
      while (j >= 0 && times[order[j]] > ts) {
        order[j + 1] = order[j];
        j--;
        budget--;
      }
      order[j + 1] = index;
    }
    if (budget <= 0) order = Int32Array.from(Array.from(order).sort((a, b) => times[a] - times[b] || a - b));

    const from = this.#bytes;
    const to = this.#spareBytes;
    const toTimes = this.#spareTimes;
    let k = 0;
    while (k < n) {
      // Runs of records already adjacent move in one copy.
      let run = 1;
      while (k + run < n && order[k + run] === order[k] + run) run++;
      to.set(from.subarray(order[k] * EVENT_SIZE, (order[k] + run) * EVENT_SIZE), k * EVENT_SIZE);
      for (let r = 0; r < run; r++) toTimes[k + r] = times[order[k] + r];
      k += run;
    }
    this.#spareBytes = this.#bytes;
    this.#spareTimes = this.#times;
    this.#bytes = to;
    this.#times = toTimes;
    this.#start = 0;
    this.#end = n;
    this.#sorted = true;
  }
}
