/**
 * Decodes ring-buffer batches into one object per record: the readable form of what the kernel
 * sent, for tests and diagnostics. The tracker itself reads records in place (record.ts).
 */
import {
  addressText, commText, EVENT_SIZE, type EventTypeName, Field, isWellFormed, sockCookie, timestampNs, TYPE_NAMES,
} from "./record.ts";

export { EVENT_SIZE, EventType, type EventTypeName } from "./record.ts";

export interface TrackerEvent {
  type: EventTypeName;
  /** Kernel CLOCK_MONOTONIC nanoseconds. */
  timestampNs: number;
  pid: number;
  comm: string;
  netns: number;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  cpu: number;
  /** Low 48 bits of the kernel socket address: joins a connection's open and close. */
  sockCookie: number;
}

export interface DecodeResult {
  events: TrackerEvent[];
  /** Records whose type or family was not one we know, and a trailing partial record: counted, never thrown. */
  malformed: number;
}

export function decodeBatch(batch: Uint8Array): DecodeResult {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const count = Math.floor(batch.byteLength / EVENT_SIZE);
  const events: TrackerEvent[] = [];
  let malformed = batch.byteLength % EVENT_SIZE === 0 ? 0 : 1;
  for (let i = 0; i < count; i++) {
    const o = i * EVENT_SIZE;
    if (!isWellFormed(batch, o)) {
      malformed++;
      continue;
    }
    events.push({
      type: TYPE_NAMES[batch[o + Field.type]]!,
      timestampNs: timestampNs(view, o),
      pid: view.getUint32(o + Field.pid, true),
      netns: view.getUint32(o + Field.netns, true),
      localAddress: addressText(batch, view, o, Field.localAddress),
      remoteAddress: addressText(batch, view, o, Field.remoteAddress),
      localPort: view.getUint16(o + Field.localPort, true),
      remotePort: view.getUint16(o + Field.remotePort, true),
      cpu: view.getUint16(o + Field.cpu, true),
      comm: commText(batch, view, o),
      sockCookie: sockCookie(view, o),
    });
  }
  return { events, malformed };
}
