/**
 * Decodes the ring-buffer batches the native reader hands over: back-to-back `struct tracker_event`
 * records (bpf/tracker.h). Offsets below mirror that header; both change in the same commit.
 */
import { formatIPv6 } from "../model/address.ts";
import { StringInterner } from "../model/intern.ts";

export const EVENT_SIZE = 80;

export const EventType = { connect: 1, accept: 2, close: 3 } as const;
export type EventTypeName = keyof typeof EventType;

export interface TrackerEvent {
  type: EventTypeName;
  /**
   * Kernel CLOCK_MONOTONIC nanoseconds (the addon's monotonicNowNs()), as a double: exact for 104
   * days of uptime, then rounded to a few ns, which ordering tolerates. BigInts cost a heap object
   * per event on the hottest path.
   */
  timestampNs: number;
  pid: number;
  comm: string;
  netns: number;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  cpu: number;
  /** Low 48 bits of the kernel socket address (the high 16 are all ones on x86-64): exact in a double. */
  sockCookie: number;
}

export interface DecodeResult {
  events: TrackerEvent[];
  /** Records whose type or family was not one we know: counted, never thrown. */
  malformed: number;
}

const TYPE_NAMES: Record<number, EventTypeName> = { 1: "connect", 2: "accept", 3: "close" };
const shared = new StringInterner();
const utf8 = new TextDecoder();

export function decodeBatch(batch: Uint8Array): DecodeResult {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const count = Math.floor(batch.byteLength / EVENT_SIZE);
  const events: TrackerEvent[] = [];
  let malformed = batch.byteLength % EVENT_SIZE === 0 ? 0 : 1;
  for (let i = 0; i < count; i++) {
    const o = i * EVENT_SIZE;
    const type = TYPE_NAMES[batch[o + 52]];
    const family = batch[o + 53];
    if (type === undefined || (family !== 4 && family !== 6)) {
      malformed++;
      continue;
    }

    events.push({
      type,
      timestampNs: view.getUint32(o + 4, true) * 2 ** 32 + view.getUint32(o, true),
      pid: view.getUint32(o + 8, true),
      netns: view.getUint32(o + 12, true),
      localAddress: family === 4 ? ipv4Text(view.getUint32(o + 16)) : shared.intern(formatIPv6(batch, o + 16)),
      remoteAddress: family === 4 ? ipv4Text(view.getUint32(o + 32)) : shared.intern(formatIPv6(batch, o + 32)),
      localPort: view.getUint16(o + 48, true),
      remotePort: view.getUint16(o + 50, true),
      cpu: view.getUint16(o + 54, true),
      comm: commText(batch, view, o + 56),
      sockCookie: (view.getUint32(o + 76, true) & 0xffff) * 2 ** 32 + view.getUint32(o + 72, true),
    });
  }
  return { events, malformed };
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
function commText(bytes: Uint8Array, view: DataView, offset: number): string {
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
