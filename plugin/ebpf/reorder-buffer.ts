/**
 * Hold-back window against cross-CPU reordering (scope#2334, #2827; fixed upstream by a hold-back in
 * scope PR#3653). Events wait until they are `windowNs` old on the kernel's monotonic clock, then
 * leave in timestamp order. Arrival out of timestamp order is normal here, not a reason to die.
 */
import type { TrackerEvent } from "./decode.ts";

export class ReorderBuffer {
  #pending: TrackerEvent[] = [];
  #sorted = true;
  #lastReleasedNs = 0;
  readonly #windowNs: number;
  /** Events that arrived before an older one and were put back in order. */
  heldBack = 0;
  /** Events older than something already released: applied anyway, in arrival order. */
  late = 0;

  constructor(windowMs: number) {
    this.#windowNs = windowMs * 1e6;
  }

  get pending(): number {
    return this.#pending.length;
  }

  push(events: readonly TrackerEvent[]): void {
    for (const event of events) {
      const last = this.#pending[this.#pending.length - 1];
      if (last !== undefined && event.timestampNs < last.timestampNs) {
        this.#sorted = false;
        this.heldBack++;
      }
      if (event.timestampNs < this.#lastReleasedNs) this.late++;
      this.#pending.push(event);
    }
  }

  /** Releases, in timestamp order, every event at least one window older than `nowNs` (all if nowNs is undefined). */
  release(nowNs?: number): TrackerEvent[] {
    if (this.#pending.length === 0) return [];
    if (!this.#sorted) {
      // Array.prototype.sort is stable, so equal timestamps keep ring-buffer order.
      this.#pending.sort((a, b) => a.timestampNs - b.timestampNs);
      this.#sorted = true;
    }
    let count = this.#pending.length;
    if (nowNs !== undefined) {
      const cutoff = nowNs - this.#windowNs;
      count = 0;
      while (count < this.#pending.length && this.#pending[count].timestampNs <= cutoff) count++;
    }
    if (count === 0) return [];
    const released = this.#pending.splice(0, count);
    const newest = released[released.length - 1].timestampNs;
    if (newest > this.#lastReleasedNs) this.#lastReleasedNs = newest;
    return released;
  }
}
