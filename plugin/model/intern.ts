/**
 * One shared copy of strings that repeat across many connections (addresses, process names), so a
 * table of 65k connections to a handful of peers does not hold 65k copies of each. Bounded: past
 * `limit` distinct strings it starts over, which costs a little sharing, never correctness.
 */
export class StringInterner {
  readonly #strings = new Map<string, string>();
  readonly #limit: number;

  constructor(limit = 16_384) {
    this.#limit = limit;
  }

  intern(value: string): string {
    const shared = this.#strings.get(value);
    if (shared !== undefined) return shared;
    if (this.#strings.size >= this.#limit) this.#strings.clear();
    this.#strings.set(value, value);
    return value;
  }
}
