/**
 * Field readers over `struct tracker_event` records (bpf/tracker.h) where they lie in a batch. The
 * hot path reads records in place: no object per event, only the fields each step needs. Offsets
 * below mirror that header; both change in the same commit.
 */
import { formatIPv6 } from "../model/address.ts";
import { StringInterner } from "../model/intern.ts";

export const EVENT_SIZE = 80;

export const Field = {
  timestamp: 0,
  pid: 8,
  netns: 12,
  localAddress: 16,
  remoteAddress: 32,
  localPort: 48,
  remotePort: 50,
  type: 52,
  family: 53,
  cpu: 54,
  comm: 56,
  cookie: 72,
} as const;

export const EventType = { connect: 1, accept: 2, close: 3 } as const;
export type EventTypeName = keyof typeof EventType;
export const TYPE_NAMES: Record<number, EventTypeName | undefined> = { 1: "connect", 2: "accept", 3: "close" };

/** A record we can read: a known type and family. Anything else is counted as malformed, never thrown. */
export function isWellFormed(bytes: Uint8Array, o: number): boolean {
  const type = bytes[o + Field.type];
  const family = bytes[o + Field.family];
  return type >= EventType.connect && type <= EventType.close && (family === 4 || family === 6);
}

/**
 * Kernel CLOCK_MONOTONIC nanoseconds (the addon's monotonicNowNs()), as a double: exact for 104
 * days of uptime, then rounded to a few ns, which ordering tolerates. A BigInt would cost a heap
 * object per event.
 */
export function timestampNs(view: DataView, o: number): number {
  return view.getUint32(o + 4, true) * 2 ** 32 + view.getUint32(o, true);
}

/** Low 48 bits of the kernel socket address (the high 16 are all ones on x86-64): exact in a double. */
export function sockCookie(view: DataView, o: number): number {
  return (view.getUint32(o + Field.cookie + 4, true) & 0xffff) * 2 ** 32 + view.getUint32(o + Field.cookie, true);
}

/**
 * The socket address folded to a small integer, for map keys on the hot path (a 48-bit number is
 * a heap object per use). Two live sockets may fold alike; callers check the tuple before trusting it.
 */
export function sockSlot(view: DataView, o: number): number {
  return (view.getUint32(o + Field.cookie, true) ^ Math.imul(view.getUint32(o + Field.cookie + 4, true) & 0xffff, 0x9e3779b1)) | 0;
}

const shared = new StringInterner();
const utf8 = new TextDecoder();

/** Text of the address at `field` (Field.localAddress or Field.remoteAddress). */
export function addressText(bytes: Uint8Array, view: DataView, o: number, field: number): string {
  if (bytes[o + Field.family] === 4) return ipv4Text(view.getUint32(o + field));
  return shared.intern(formatIPv6(bytes, o + field));
}

/** IPv4 text by address value: repeated peers cost a map lookup, not a new string. */
const ipv4Texts = new Map<number, string>();
function ipv4Text(address: number): string {
  let text = ipv4Texts.get(address);
  if (text === undefined) {
    if (ipv4Texts.size >= 16_384) ipv4Texts.clear();
    text = `${address >>> 24}.${(address >>> 16) & 255}.${(address >>> 8) & 255}.${address & 255}`;
    ipv4Texts.set(address, text);
  }
  return text;
}

/** Comm text by its 16 bytes (four exact words): most events come from few processes. */
const commTexts = new Map<number, { w1: number; w2: number; w3: number; text: string }>();
export function commText(bytes: Uint8Array, view: DataView, o: number): string {
  const offset = o + Field.comm;
  if (bytes[offset] === 0) return "";
  const w0 = view.getUint32(offset, true);
  const w1 = view.getUint32(offset + 4, true);
  const w2 = view.getUint32(offset + 8, true);
  const w3 = view.getUint32(offset + 12, true);
  const known = commTexts.get(w0);
  if (known !== undefined && known.w1 === w1 && known.w2 === w2 && known.w3 === w3) return known.text;
  if (commTexts.size >= 4096) commTexts.clear();
  const text = shared.intern(readComm(bytes, offset));
  commTexts.set(w0, { w1, w2, w3, text });
  return text;
}

/** The kernel's comm: up to 16 bytes, NUL-terminated when shorter, UTF-8 when a name has non-ASCII. */
function readComm(bytes: Uint8Array, offset: number): string {
  let end = offset;
  let ascii = true;
  while (end < offset + 16 && bytes[end] !== 0) {
    if (bytes[end] >= 0x80) ascii = false;
    end++;
  }
  if (!ascii) return utf8.decode(bytes.subarray(offset, end));
  return String.fromCharCode.apply(null, bytes.subarray(offset, end) as unknown as number[]);
}
