/**
 * A faster EndpointReport decoder for clients, giving exactly what the generated
 * EndpointReport.decode gives.
 *
 * A Report repeats every tracked connection, and the generated decoder makes a new string for each
 * of a connection's three strings, although a host's reports name a few hundred distinct addresses
 * and process names; at 100k connections those allocations and their collection are most of the
 * decode. Here each connection's fields are read straight from the bytes and its short ASCII
 * strings come from a small cache keyed by their bytes. Unknown fields (a newer server's) are
 * skipped as the generated code skips them. Anything else the fast path does not expect (a group,
 * a varint wider than its field allows, a negative enum, a truncated entry, a nested message that
 * overruns its length) goes to the generated decoder for the whole message, so odd or malformed
 * input is decoded, or rejected, exactly as before.
 */
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Connection, EndpointReport } from "../generated/endpoint_reporter.ts";

const TAG_HOST_ID = 0x0a;
const TAG_CONNECTION = 0x12;
const TAG_STATUS = 0x1a;
const TAG_DROPPED_CLOSED = 0x20;
const TAG_FIRST_REPORT = 0x28;
const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** Direct-mapped: a colliding string replaces the one in its slot (a miss, never a wrong string). */
const CACHE_SLOTS = 4096;
const MAX_CACHED_LENGTH = 64;
/** As the generated code's reader decodes: not fatal, a leading U+FEFF kept as text. */
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });

export class ReportDecoder {
  readonly #cached: string[] = new Array(CACHE_SLOTS).fill("");
  #pos = 0;
  #bytes: Uint8Array = new Uint8Array(0);

  decode(bytes: Uint8Array): EndpointReport {
    this.#bytes = bytes;
    const report: EndpointReport = { hostId: "", connections: [], status: undefined, droppedClosed: 0, firstReport: false };
    let reader: BinaryReader | undefined;
    this.#pos = 0;
    while (this.#pos < bytes.length) {
      const start = this.#pos;
      const tag = this.#varint32();
      if (tag === TAG_CONNECTION) {
        const length = this.#varint32();
        const end = this.#pos + length;
        if (length < 0 || end > bytes.length) return EndpointReport.decode(bytes);
        const connection = this.#connection(this.#pos, end);
        if (connection === undefined) return EndpointReport.decode(bytes);
        report.connections.push(connection);
        this.#pos = end;
        continue;
      }
      if (!this.#skip(tag, bytes.length) || this.#pos > bytes.length) return EndpointReport.decode(bytes);
      const end = this.#pos;
      // Any other field: the generated decoder reads it where it lies, so a nested message that
      // overruns its length reads the same following bytes; if it did, the rest of the message is
      // misaligned for the generated decoder too, and only it should go on.
      reader ??= new BinaryReader(bytes);
      reader.pos = start;
      const field = EndpointReport.decode(reader, end - start);
      if (reader.pos !== end) return EndpointReport.decode(bytes);
      if (tag === TAG_HOST_ID) report.hostId = field.hostId;
      else if (tag === TAG_STATUS) report.status = field.status;
      else if (tag === TAG_DROPPED_CLOSED) report.droppedClosed = field.droppedClosed;
      else if (tag === TAG_FIRST_REPORT) report.firstReport = field.firstReport;
    }
    return report;
  }

  /** One Connection entry; undefined when it holds something only the generated decoder should judge. */
  #connection(start: number, end: number): Connection | undefined {
    let localAddress = "", localPort = 0, remoteAddress = "", remotePort = 0, networkNamespace = 0, pid = 0;
    let comm = "", direction = 0, closed = false, source = 0;
    let natLocalAddress = "", natLocalPort = 0, natRemoteAddress = "", natRemotePort = 0;
    this.#pos = start;
    while (this.#pos < end) {
      const tag = this.#varint32();
      let ok = true;
      switch (tag) {
        case 10: localAddress = this.#string(end); break;
        case 26: remoteAddress = this.#string(end); break;
        case 58: comm = this.#string(end); break;
        case 90: natLocalAddress = this.#string(end); break;
        case 106: natRemoteAddress = this.#string(end); break;
        case 96: ok = (natLocalPort = this.#varint32()) >= 0; break;
        case 112: ok = (natRemotePort = this.#varint32()) >= 0; break;
        case 16: ok = (localPort = this.#varint32()) >= 0; break;
        case 32: ok = (remotePort = this.#varint32()) >= 0; break;
        case 40: ok = (networkNamespace = this.#varint32()) >= 0; break;
        case 48: ok = (pid = this.#varint32()) >= 0; break;
        // Enums and bool: small values only (negative enums take ten bytes, the generated way).
        case 64: ok = (direction = this.#smallVarint()) >= 0; break;
        case 80: ok = (source = this.#smallVarint()) >= 0; break;
        case 72: {
          const value = this.#smallVarint();
          closed = value > 0;
          ok = value >= 0;
          break;
        }
        // A field this client does not know (a newer server's), or a known number with another
        // wire type: skipped, as the generated decoder skips it.
        default: ok = this.#skip(tag, end);
      }
      if (!ok || this.#pos > end) return undefined;
    }
    return { localAddress, localPort, remoteAddress, remotePort, networkNamespace, pid, comm, direction, closed, source, natLocalAddress, natLocalPort, natRemoteAddress, natRemotePort };
  }

  /** Past one field of an unknown tag; false for groups, tag 0 and invalid wire types. */
  #skip(tag: number, end: number): boolean {
    if (tag <= 0 || tag >>> 3 === 0) return false;
    switch (tag & 7) {
      case WIRE_VARINT:
        while (this.#pos < end && this.#bytes[this.#pos] >= 0x80) this.#pos++;
        this.#pos++;
        return true;
      case WIRE_I64:
        this.#pos += 8;
        return true;
      case WIRE_I32:
        this.#pos += 4;
        return true;
      case WIRE_LEN: {
        const length = this.#varint32();
        if (length < 0) return false;
        this.#pos += length;
        return true;
      }
      default:
        return false;
    }
  }

  /** A uint32 varint of at most 5 bytes that fits in 32 bits; -1 otherwise. */
  #varint32(): number {
    const bytes = this.#bytes;
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = bytes[this.#pos++];
      if (b === undefined) return -1;
      if (shift === 28) return b > 0x0f ? -1 : (result | (b << 28)) >>> 0;
      result |= (b & 0x7f) << shift;
      if (b < 0x80) return result;
    }
    return -1;
  }

  /** A one-byte varint (0..127); -1 otherwise. */
  #smallVarint(): number {
    const b = this.#bytes[this.#pos++];
    return b === undefined || b >= 0x80 ? -1 : b;
  }

  /** A length-prefixed string; repeated short ASCII ones from the cache. Past `end` if it does not fit. */
  #string(end: number): string {
    const bytes = this.#bytes;
    const length = this.#varint32();
    const from = this.#pos;
    const to = from + length;
    if (length < 0 || to > end) {
      this.#pos = end + 1;
      return "";
    }
    this.#pos = to;
    if (length > MAX_CACHED_LENGTH) return utf8.decode(bytes.subarray(from, to));
    let hash = 0x811c9dc5 ^ length;
    for (let i = from; i < to; i++) {
      const b = bytes[i];
      if (b >= 0x80) return utf8.decode(bytes.subarray(from, to));
      hash = Math.imul(hash ^ b, 0x01000193);
    }
    const slot = (hash ^ (hash >>> 16)) & (CACHE_SLOTS - 1);
    const cached = this.#cached[slot];
    // ASCII text is its bytes, char for char: compared without copying the bytes anywhere.
    if (cached.length === length) {
      let same = true;
      for (let i = 0; i < length; i++) {
        if (cached.charCodeAt(i) !== bytes[from + i]) {
          same = false;
          break;
        }
      }
      if (same) return cached;
    }
    const text = String.fromCharCode.apply(null, bytes.subarray(from, to) as unknown as number[]);
    this.#cached[slot] = text;
    return text;
  }
}
