/**
 * Socket inode -> row index, for the fd walk's one lookup per open fd on the host. Open addressing
 * over typed arrays: at 200k sockets a Map costs four times as much (to build and to probe).
 * Socket inodes are 32-bit (get_next_ino); anything else goes to a small Map on the side.
 */

const EMPTY = 0;

/** 1 .. 2^32-1, integers only. */
function fitsTable(inode: number): boolean {
  return (inode >>> 0) === inode && inode !== EMPTY;
}

export class InodeIndex {
  #keys = new Uint32Array(1024);
  #values = new Int32Array(1024);
  #mask = 1023;
  #size = 0;
  readonly #odd = new Map<number, number>();

  get size(): number {
    return this.#size + this.#odd.size;
  }

  /** Stores `index` for `inode` unless the inode is there already (the first wins): returns whether it stored. */
  add(inode: number, index: number): boolean {
    if (!fitsTable(inode)) {
      if (this.#odd.has(inode)) return false;
      this.#odd.set(inode, index);
      return true;
    }
    if ((this.#size + 1) * 2 > this.#keys.length) this.#grow();
    const keys = this.#keys;
    let i = Math.imul(inode, 0x9e3779b1) >>> 0 & this.#mask;
    for (let k = keys[i]; k !== EMPTY; k = keys[i]) {
      if (k === inode) return false;
      i = (i + 1) & this.#mask;
    }
    keys[i] = inode;
    this.#values[i] = index;
    this.#size++;
    return true;
  }

  /** The index stored for `inode`, or -1. */
  get(inode: number): number {
    if (!fitsTable(inode)) return this.#odd.get(inode) ?? -1;
    const keys = this.#keys;
    let i = Math.imul(inode, 0x9e3779b1) >>> 0 & this.#mask;
    for (let k = keys[i]; k !== EMPTY; k = keys[i]) {
      if (k === inode) return this.#values[i];
      i = (i + 1) & this.#mask;
    }
    return -1;
  }

  #grow(): void {
    const oldKeys = this.#keys;
    const oldValues = this.#values;
    const capacity = oldKeys.length * 2;
    const keys = new Uint32Array(capacity);
    const values = new Int32Array(capacity);
    const mask = capacity - 1;
    for (let j = 0; j < oldKeys.length; j++) {
      const key = oldKeys[j];
      if (key === EMPTY) continue;
      let i = Math.imul(key, 0x9e3779b1) >>> 0 & mask;
      while (keys[i] !== EMPTY) i = (i + 1) & mask;
      keys[i] = key;
      values[i] = oldValues[j];
    }
    this.#keys = keys;
    this.#values = values;
    this.#mask = mask;
  }
}
