/** A Map keyed by unsigned 32-bit integers without heap-number keys. */
/**
 * A Map by u32 (conntrack ids, IPv4 addresses). Conntrack ids are hashes, mostly past V8's small-integer range, and a Map with
 * heap-number keys was 2-5x slower to fill: four maps by the top two bits, each keyed by the rest.
 */
export class IdMap<T> {
  readonly #maps = [new Map<number, T>(), new Map<number, T>(), new Map<number, T>(), new Map<number, T>()];

  get size(): number {
    return this.#maps[0].size + this.#maps[1].size + this.#maps[2].size + this.#maps[3].size;
  }

  get(id: number): T | undefined {
    return this.#maps[id >>> 30].get(id & 0x3fffffff);
  }

  has(id: number): boolean {
    return this.#maps[id >>> 30].has(id & 0x3fffffff);
  }

  set(id: number, value: T): void {
    this.#maps[id >>> 30].set(id & 0x3fffffff, value);
  }

  delete(id: number): boolean {
    return this.#maps[id >>> 30].delete(id & 0x3fffffff);
  }

  clear(): void {
    for (const m of this.#maps) m.clear();
  }

  *values(): IterableIterator<T> {
    for (const m of this.#maps) yield* m.values();
  }
}
