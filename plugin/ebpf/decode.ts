/**
 * Decodes the ring-buffer batches the native reader hands over: back-to-back `struct tracker_event`
 * records (bpf/tracker.h). Offsets below mirror that header; both change in the same commit.
 */
import { formatIPv4, formatIPv6 } from "../model/address.ts";
import { StringInterner } from "../model/intern.ts";

export const EVENT_SIZE = 80;

export const EventType = { connect: 1, accept: 2, close: 3 } as const;
export type EventTypeName = keyof typeof EventType;

export interface TrackerEvent {
  type: EventTypeName;
  /** Kernel CLOCK_MONOTONIC nanoseconds (same clock as process.hrtime.bigint()). */
  timestampNs: bigint;
  pid: number;
  comm: string;
  netns: number;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  cpu: number;
  sockCookie: bigint;
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
    const format = family === 4 ? formatIPv4 : formatIPv6;
    events.push({
      type,
      timestampNs: view.getBigUint64(o, true),
      pid: view.getUint32(o + 8, true),
      netns: view.getUint32(o + 12, true),
      localAddress: shared.intern(format(batch, o + 16)),
      remoteAddress: shared.intern(format(batch, o + 32)),
      localPort: view.getUint16(o + 48, true),
      remotePort: view.getUint16(o + 50, true),
      cpu: view.getUint16(o + 54, true),
      comm: shared.intern(readComm(batch, o + 56)),
      sockCookie: view.getBigUint64(o + 72, true),
    });
  }
  return { events, malformed };
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
