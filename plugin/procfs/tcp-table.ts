/**
 * Streaming parser for /proc/net/tcp and /proc/net/tcp6, fed in chunks of bytes.
 *
 *   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ...
 *    0: 0100007F:0CEA 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000  1000        0 12345 ...
 *
 * Bad lines are counted in `skipped`, never thrown: blank, hostile, binary, longer than
 * MAX_LINE_BYTES, or cut short. Every kernel prints more fields after the inode (refcount, socket
 * pointer, ...), so a line must go on past it: a line cut inside the inode is not taken for a
 * shorter inode. The header line is neither a row nor skipped.
 *
 * A time-wait remnant (the kernel's inet_timewait_sock, timer 3) is printed with its substate, so a
 * connection whose closing side has already let go of its socket can show as FIN_WAIT2: such rows
 * are reported as TIME_WAIT, which is what they are.
 */
import { AddressDecoder } from "./address-decoder.ts";

/** The kernel's st column (include/net/tcp_states.h). */
export const TcpState = {
  established: 0x01,
  synSent: 0x02,
  synRecv: 0x03,
  finWait1: 0x04,
  finWait2: 0x05,
  timeWait: 0x06,
  close: 0x07,
  closeWait: 0x08,
  lastAck: 0x09,
  listen: 0x0a,
  closing: 0x0b,
  newSynRecv: 0x0c,
} as const;

/**
 * Open, as Scope's procspy counts it (probe/endpoint/procspy/procnet.go): established or half-closed.
 * The eBPF side (bpf/tracker.bpf.c, is_open_state) reports a close when a connection leaves this set.
 */
export const OPEN_TCP_STATES: readonly number[] = [TcpState.established, TcpState.finWait1, TcpState.finWait2, TcpState.closeWait];

/** The tr column of a time-wait remnant (get_timewait4_sock / get_timewait6_sock). */
const TIME_WAIT_TIMER = 3;

/** Real lines are under 200 bytes; anything this long is not one. */
export const MAX_LINE_BYTES = 1024;

export type TcpRowHandler = (
  state: number,
  localAddress: string,
  localPort: number,
  remoteAddress: string,
  remotePort: number,
  inode: number,
) => void;

export interface TcpTableParserOptions {
  onRow: TcpRowHandler;
  /** Only rows in these states reach onRow (the others are still validated and counted). Default: all. */
  states?: readonly number[];
  decoder?: AddressDecoder;
}

const NL = 0x0a;
const SPACE = 0x20;
const COLON = 0x3a;

/** Hex digit values, -1 for every other byte. */
const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX[0x30 + i] = i;
for (let i = 0; i < 6; i++) HEX[0x41 + i] = HEX[0x61 + i] = 10 + i;

/** Eight hex digits at `p`, already validated, as an unsigned 32-bit number. */
function word(b: Uint8Array, p: number): number {
  return ((HEX[b[p]] << 28) | (HEX[b[p + 1]] << 24) | (HEX[b[p + 2]] << 20) | (HEX[b[p + 3]] << 16) |
    (HEX[b[p + 4]] << 12) | (HEX[b[p + 5]] << 8) | (HEX[b[p + 6]] << 4) | HEX[b[p + 7]]) >>> 0;
}

export class TcpTableParser {
  /** Well-formed rows seen, whether or not their state was wanted. */
  rows = 0;
  skipped = 0;
  readonly #onRow: TcpRowHandler;
  readonly #decoder: AddressDecoder;
  readonly #wanted = new Uint8Array(256);
  /** The start of a line that continues in the next chunk. */
  readonly #carry = new Uint8Array(MAX_LINE_BYTES);
  #carryLen = 0;
  /** Inside a line already known to be too long: drop bytes up to its newline. */
  #discarding = false;

  constructor(options: TcpTableParserOptions) {
    this.#onRow = options.onRow;
    this.#decoder = options.decoder ?? new AddressDecoder();
    if (options.states === undefined) this.#wanted.fill(1);
    else for (const s of options.states) if (s >= 0 && s < 256) this.#wanted[s] = 1;
  }

  push(chunk: Uint8Array): void {
    const n = chunk.length;
    let start = 0;
    if (this.#carryLen > 0 || this.#discarding) {
      const nl = chunk.indexOf(NL);
      if (nl < 0) {
        this.#keep(chunk, 0, n);
        return;
      }
      this.#keep(chunk, 0, nl);
      this.#finishCarried();
      start = nl + 1;
    }
    for (let nl = chunk.indexOf(NL, start); nl >= 0; nl = chunk.indexOf(NL, start)) {
      if (nl - start > MAX_LINE_BYTES) this.skipped++;
      else this.#line(chunk, start, nl);
      start = nl + 1;
    }
    if (start < n) this.#keep(chunk, start, n);
  }

  /** Input is over: a last line without its newline is judged now. */
  end(): void {
    if (this.#carryLen > 0 || this.#discarding) this.#finishCarried();
  }

  #keep(chunk: Uint8Array, from: number, to: number): void {
    if (this.#discarding) return;
    if (this.#carryLen + (to - from) > MAX_LINE_BYTES) {
      this.#discarding = true;
      this.#carryLen = 0;
      return;
    }
    this.#carry.set(chunk.subarray(from, to), this.#carryLen);
    this.#carryLen += to - from;
  }

  #finishCarried(): void {
    if (this.#discarding) this.skipped++;
    else this.#line(this.#carry, 0, this.#carryLen);
    this.#discarding = false;
    this.#carryLen = 0;
  }

  /** One line, b[s..e) without its newline. */
  #line(b: Uint8Array, s: number, e: number): void {
    let p = s;
    while (p < e && b[p] === SPACE) p++;
    const slStart = p;
    while (p < e && b[p] >= 0x30 && b[p] <= 0x39) p++;
    if (p === slStart) {
      const header = p + 1 < e && b[p] === 0x73 && b[p + 1] === 0x6c && (p + 2 === e || b[p + 2] === SPACE);
      if (!header) this.skipped++;
      return;
    }
    if (p >= e || b[p] !== COLON) return void this.skipped++;
    p++;
    while (p < e && b[p] === SPACE) p++;

    const local = p;
    while (p < e && HEX[b[p]] >= 0) p++;
    const width = p - local;
    if ((width !== 8 && width !== 32) || p + 6 > e || b[p] !== COLON) return void this.skipped++;
    const localPortAt = p + 1;
    p = localPortAt + 4;
    if (b[p] !== SPACE || (HEX[b[localPortAt]] | HEX[b[localPortAt + 1]] | HEX[b[localPortAt + 2]] | HEX[b[localPortAt + 3]]) < 0) return void this.skipped++;
    while (p < e && b[p] === SPACE) p++;

    const remote = p;
    while (p < e && HEX[b[p]] >= 0) p++;
    if (p - remote !== width || p + 6 > e || b[p] !== COLON) return void this.skipped++;
    const remotePortAt = p + 1;
    p = remotePortAt + 4;
    if (b[p] !== SPACE || (HEX[b[remotePortAt]] | HEX[b[remotePortAt + 1]] | HEX[b[remotePortAt + 2]] | HEX[b[remotePortAt + 3]]) < 0) return void this.skipped++;
    while (p < e && b[p] === SPACE) p++;

    if (p + 3 > e || (HEX[b[p]] | HEX[b[p + 1]]) < 0 || b[p + 2] !== SPACE) return void this.skipped++;
    let state = (HEX[b[p]] << 4) | HEX[b[p + 1]];
    p += 2;

    // tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout: present; only tr is needed.
    for (let field = 0; field < 5; field++) {
      while (p < e && b[p] === SPACE) p++;
      if (p === e) return void this.skipped++;
      if (field === 1 && p + 2 < e && b[p + 2] === COLON && ((HEX[b[p]] << 4) | HEX[b[p + 1]]) === TIME_WAIT_TIMER) state = TcpState.timeWait;
      while (p < e && b[p] !== SPACE) p++;
    }
    while (p < e && b[p] === SPACE) p++;
    const inodeStart = p;
    let inode = 0;
    while (p < e && b[p] >= 0x30 && b[p] <= 0x39) inode = inode * 10 + (b[p++] - 0x30);
    const digits = p - inodeStart;
    if (digits === 0 || digits > 20 || p === e || b[p] !== SPACE) return void this.skipped++;
    while (p < e && b[p] === SPACE) p++;
    if (p === e) return void this.skipped++;

    this.rows++;
    if (this.#wanted[state] === 0) return;
    const d = this.#decoder;
    const localPort = (HEX[b[localPortAt]] << 12) | (HEX[b[localPortAt + 1]] << 8) | (HEX[b[localPortAt + 2]] << 4) | HEX[b[localPortAt + 3]];
    const remotePort = (HEX[b[remotePortAt]] << 12) | (HEX[b[remotePortAt + 1]] << 8) | (HEX[b[remotePortAt + 2]] << 4) | HEX[b[remotePortAt + 3]];
    const localAddress = width === 8 ? d.ipv4(word(b, local)) : d.ipv6(word(b, local), word(b, local + 8), word(b, local + 16), word(b, local + 24));
    const remoteAddress = width === 8 ? d.ipv4(word(b, remote)) : d.ipv6(word(b, remote), word(b, remote + 8), word(b, remote + 16), word(b, remote + 24));
    this.#onRow(state, localAddress, localPort, remoteAddress, remotePort, inode);
  }
}

export interface TcpRow {
  state: number;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  inode: number;
}

/** Whole-content convenience (tests, small tables): every well-formed row, in order. */
export function parseTcpTable(content: string | Uint8Array, decoder?: AddressDecoder): { rows: TcpRow[]; skipped: number } {
  const rows: TcpRow[] = [];
  const parser = new TcpTableParser({
    decoder,
    onRow: (state, localAddress, localPort, remoteAddress, remotePort, inode) => {
      rows.push({ state, localAddress, localPort, remoteAddress, remotePort, inode });
    },
  });
  parser.push(typeof content === "string" ? new TextEncoder().encode(content) : content);
  parser.end();
  return { rows, skipped: parser.skipped };
}
