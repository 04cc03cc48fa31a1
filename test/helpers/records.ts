/** Builds ring-buffer batches (struct tracker_event, bpf/tracker.h) from readable events, for tests and benchmarks. */
import { isIPv4 } from "node:net";
import { EVENT_SIZE, EventType, Field } from "../../plugin/ebpf/record.ts";
import type { TrackerEvent } from "../../plugin/ebpf/decode.ts";

export type EventFields = Partial<TrackerEvent> & Pick<TrackerEvent, "type" | "timestampNs">;

const DEFAULTS: Omit<TrackerEvent, "type" | "timestampNs"> = {
  pid: 42, comm: "x", netns: 1, localAddress: "10.0.0.1", localPort: 5000, remoteAddress: "10.0.0.2", remotePort: 80, cpu: 0, sockCookie: 1,
};

/** Address bytes in network order (16 bytes; IPv4 in the first 4). */
function addressBytes(text: string): Uint8Array {
  const out = new Uint8Array(16);
  if (isIPv4(text)) {
    out.set(text.split(".").map(Number));
    return out;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = [...headGroups, ...new Array(8 - headGroups.length - tailGroups.length).fill("0"), ...tailGroups];
  groups.forEach((g, i) => {
    const n = parseInt(g, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 255;
  });
  return out;
}

export function encodeRecord(fields: EventFields, bytes: Uint8Array, o: number): void {
  const e = { ...DEFAULTS, ...fields };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  view.setUint32(o + Field.timestamp, e.timestampNs % 2 ** 32, true);
  view.setUint32(o + Field.timestamp + 4, Math.floor(e.timestampNs / 2 ** 32), true);
  view.setUint32(o + Field.pid, e.pid, true);
  view.setUint32(o + Field.netns, e.netns, true);
  bytes.set(addressBytes(e.localAddress), o + Field.localAddress);
  bytes.set(addressBytes(e.remoteAddress), o + Field.remoteAddress);
  view.setUint16(o + Field.localPort, e.localPort, true);
  view.setUint16(o + Field.remotePort, e.remotePort, true);
  bytes[o + Field.type] = EventType[e.type];
  bytes[o + Field.family] = isIPv4(e.localAddress) ? 4 : 6;
  view.setUint16(o + Field.cpu, e.cpu, true);
  bytes.set(new TextEncoder().encode(e.comm).subarray(0, 16), o + Field.comm);
  view.setUint32(o + Field.cookie, e.sockCookie % 2 ** 32, true);
  view.setUint32(o + Field.cookie + 4, (0xffff0000 | Math.floor(e.sockCookie / 2 ** 32)) >>> 0, true);
}

export function encodeRecords(events: readonly EventFields[]): Uint8Array {
  const bytes = new Uint8Array(events.length * EVENT_SIZE);
  events.forEach((e, i) => encodeRecord(e, bytes, i * EVENT_SIZE));
  return bytes;
}

export interface SocketFields {
  pid?: number;
  comm?: string;
  netns?: number;
  localAddress?: string;
  localPort: number;
  remoteAddress?: string;
  remotePort?: number;
  /** TCP state: 1 ESTABLISHED (the default), 10 LISTEN. */
  state?: number;
  sockCookie?: number;
}

/** Snapshot records (struct tracker_socket, bpf/tracker.h), as the iterator writes them. */
export function encodeSocketRecords(sockets: readonly SocketFields[]): Uint8Array {
  const bytes = new Uint8Array(sockets.length * 80);
  const view = new DataView(bytes.buffer);
  sockets.forEach((s, i) => {
    const o = i * 80;
    const localAddress = s.localAddress ?? "10.0.0.1";
    view.setUint32(o + Field.pid, s.pid ?? 42, true);
    view.setUint32(o + Field.netns, s.netns ?? 1, true);
    bytes.set(addressBytes(localAddress), o + Field.localAddress);
    bytes.set(addressBytes(s.remoteAddress ?? (isIPv4(localAddress) ? "10.0.0.2" : "::")), o + Field.remoteAddress);
    view.setUint16(o + Field.localPort, s.localPort, true);
    view.setUint16(o + Field.remotePort, s.remotePort ?? 0, true);
    bytes[o + Field.type] = 4;
    bytes[o + Field.family] = isIPv4(localAddress) ? 4 : 6;
    bytes[o + 54] = s.state ?? 1;
    bytes.set(new TextEncoder().encode(s.comm ?? "x").subarray(0, 16), o + Field.comm);
    view.setBigUint64(o + Field.cookie, s.sockCookie !== undefined ? BigInt(s.sockCookie) : 0xffff000000001000n + BigInt(i * 64), true);
  });
  return bytes;
}
