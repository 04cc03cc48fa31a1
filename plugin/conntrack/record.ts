/**
 * The conntrack record the addon's reader thread hands over (native/src/conntrack_netlink.h,
 * struct CtRecord): 88 bytes, little-endian. Flows are TCP only (as Scope's conntrack walker);
 * the markers carry a count instead of a flow.
 */
import { formatIPv4, formatIPv6 } from "../model/address.ts";
import { IdMap } from "./id-map.ts";

export const CT_RECORD_SIZE = 88;

export const enum CtKind {
  dumped = 1,
  new = 2,
  /** An UPDATE into TIME_WAIT or CLOSE: the TCP connection is over (DESTROY comes minutes later). */
  ended = 3,
  destroyed = 4,
  dumpBegin = 5,
  dumpEnd = 6,
  /** The kernel dropped events for us (ENOBUFS); count is the total so far, a dump follows. */
  lost = 7,
}

/** enum tcp_conntrack */
export const CT_TCP_TIME_WAIT = 7;
export const CT_TCP_CLOSE = 8;
export const CT_NO_STATE = 0xff;

/** A conntrack flow: the original tuple (as the connecting side sent it) and the reply tuple (as the answering side sees it). */
export interface Flow {
  id: number;
  family: 4 | 6;
  origSrc: string;
  origSport: number;
  origDst: string;
  origDport: number;
  replySrc: string;
  replySport: number;
  replyDst: string;
  replyDport: number;
  /** Source or destination rewritten (IPS_SRC_NAT / IPS_DST_NAT, or tuples that differ). */
  nat: boolean;
  tcpState: number;
  /** The flow table's bookkeeping: dump generation last confirmed in; when it ended (0: active). */
  seen: number;
  endedMs: number;
}

export function recordKind(batch: Uint8Array, at: number): number {
  return batch[at];
}

export function recordCount(view: DataView, at: number): number {
  return view.getUint32(at + 12, true);
}

export function recordTcpState(batch: Uint8Array, at: number): number {
  return batch[at + 2];
}

export function recordIsNat(batch: Uint8Array, at: number): boolean {
  return (batch[at + 3] & 1) !== 0;
}

export function recordId(view: DataView, at: number): number {
  return view.getUint32(at + 8, true);
}

/**
 * IPv4 texts by address: a dump's flows share a few addresses, and four fresh strings per flow
 * made most of a 100k dump's garbage. Bounded: started over when full.
 */
const ipv4Texts = new IdMap<string>();
let ipv4TextCount = 0;

function address(batch: Uint8Array, view: DataView, family: number, offset: number): string {
  if (family !== 4) return formatIPv6(batch, offset);
  const raw = view.getUint32(offset, true);
  let text = ipv4Texts.get(raw);
  if (text === undefined) {
    if (ipv4TextCount >= 65_536) {
      ipv4Texts.clear();
      ipv4TextCount = 0;
    }
    text = formatIPv4(batch, offset);
    ipv4Texts.set(raw, text);
    ipv4TextCount++;
  }
  return text;
}

/** The flow of a dumped/new/ended/destroyed record, or undefined when its family byte is not 4 or 6. */
export function decodeFlow(batch: Uint8Array, view: DataView, at: number, generation = 0): Flow | undefined {
  const family = batch[at + 1];
  if (family !== 4 && family !== 6) return undefined;
  const nat = (batch[at + 3] & 1) !== 0;
  const origSrc = address(batch, view, family, at + 16);
  const origDst = address(batch, view, family, at + 32);
  const origSport = view.getUint16(at + 80, true);
  const origDport = view.getUint16(at + 82, true);
  // An untranslated flow's reply tuple is its original one reversed: share the strings.
  const replySrc = nat ? address(batch, view, family, at + 48) : origDst;
  const replyDst = nat ? address(batch, view, family, at + 64) : origSrc;
  return {
    id: view.getUint32(at + 8, true),
    family,
    origSrc,
    origSport,
    origDst,
    origDport,
    replySrc,
    replySport: view.getUint16(at + 84, true),
    replyDst,
    replyDport: view.getUint16(at + 86, true),
    nat,
    tcpState: batch[at + 2],
    seen: generation,
    endedMs: 0,
  };
}
