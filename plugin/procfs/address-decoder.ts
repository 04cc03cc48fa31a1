/**
 * Text addresses from the hex words of /proc/net/tcp{,6}, formatted exactly as the eBPF source
 * formats its raw bytes (../model/address.ts), so both sources agree on connection keys.
 *
 * The kernel prints each 32-bit word of the address as a host-endian integer ("%08X" of a __be32),
 * so on little-endian hosts the bytes of every word come out reversed.
 */
import { endianness } from "node:os";
import { formatIPv4, formatIPv6 } from "../model/address.ts";

const LITTLE_ENDIAN = endianness() === "LE";
/** Caches are dropped wholesale past this size: scans see the same few addresses over and over. */
const CACHE_LIMIT = 1 << 16;

export class AddressDecoder {
  readonly #v4 = new Map<number, string>();
  readonly #v6 = new Map<string, string>();
  readonly #bytes = new Uint8Array(16);
  readonly #littleEndian: boolean;
  /** The IPv6 word 0000ffff (network order) as the kernel prints it on such a host. */
  readonly #mappedMarker: number;

  /** `littleEndian` is the byte order of the host that printed the table (this one by default). */
  constructor(littleEndian = LITTLE_ENDIAN) {
    this.#littleEndian = littleEndian;
    this.#mappedMarker = littleEndian ? 0xffff0000 : 0x0000ffff;
  }

  /** `word` is the 32-bit value as printed in /proc/net/tcp. */
  ipv4(word: number): string {
    let text = this.#v4.get(word);
    if (text === undefined) {
      this.#putWord(word, 0);
      text = formatIPv4(this.#bytes, 0);
      if (this.#v4.size >= CACHE_LIMIT) this.#v4.clear();
      this.#v4.set(word, text);
    }
    return text;
  }

  /** The four 32-bit words as printed in /proc/net/tcp6. IPv4-mapped addresses come back as IPv4. */
  ipv6(w0: number, w1: number, w2: number, w3: number): string {
    if (w0 === 0 && w1 === 0 && w2 === this.#mappedMarker) return this.ipv4(w3);
    const key = String.fromCharCode(w0 >>> 16, w0 & 0xffff, w1 >>> 16, w1 & 0xffff, w2 >>> 16, w2 & 0xffff, w3 >>> 16, w3 & 0xffff);
    let text = this.#v6.get(key);
    if (text === undefined) {
      this.#putWord(w0, 0);
      this.#putWord(w1, 4);
      this.#putWord(w2, 8);
      this.#putWord(w3, 12);
      text = formatIPv6(this.#bytes, 0);
      if (this.#v6.size >= CACHE_LIMIT) this.#v6.clear();
      this.#v6.set(key, text);
    }
    return text;
  }

  #putWord(word: number, offset: number): void {
    const b = this.#bytes;
    if (this.#littleEndian) {
      b[offset] = word & 0xff;
      b[offset + 1] = (word >>> 8) & 0xff;
      b[offset + 2] = (word >>> 16) & 0xff;
      b[offset + 3] = word >>> 24;
    } else {
      b[offset] = word >>> 24;
      b[offset + 1] = (word >>> 16) & 0xff;
      b[offset + 2] = (word >>> 8) & 0xff;
      b[offset + 3] = word & 0xff;
    }
  }
}
