/** How the CLI prints connections and status: ss-like columns for people, plain objects for --json. */
import { isIP } from "node:net";
import * as pb from "../generated/endpoint_reporter.ts";
import type { Connection } from "../model/connection.ts";
import { directionName, sourceName } from "../servers/grpc/convert.ts";

/** The plugin's own Connection shape, with the direction and source as the server named them. */
export type ConnectionJson = Omit<Connection, "direction" | "source"> & { direction: string; source: string };

export function connectionJson(c: pb.Connection): ConnectionJson {
  return {
    localAddress: c.localAddress,
    localPort: c.localPort,
    remoteAddress: c.remoteAddress,
    remotePort: c.remotePort,
    netns: c.networkNamespace,
    pid: c.pid,
    comm: c.comm,
    direction: directionName(c.direction),
    closed: c.closed,
    source: sourceName(c.source),
  };
}

export function statusJson(s: pb.TrackerStatus | undefined) {
  if (s === undefined) return undefined;
  return {
    source: sourceName(s.source),
    since: s.since?.toISOString() ?? new Date(s.sinceUnixMs).toISOString(),
    reason: s.reason,
    counters: s.counters ?? {},
    clients: s.clients,
    watchers: s.watchers,
    delivery: s.delivery ?? {},
    ...(s.conntrack === undefined ? {} : { conntrack: s.conntrack }),
  };
}

export function endpoint(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

const DIRECTION_SHORT: Record<string, string> = { incoming: "in", outgoing: "out", unknown: "?" };

export const HEADER = ["Local Address:Port", "Peer Address:Port", "Dir", "Process", "Netns", "Source"];

export function connectionRow(c: pb.Connection): string[] {
  const j = connectionJson(c);
  const process = j.pid === 0 ? "-" : `${j.comm || "?"}/${j.pid}`;
  return [endpoint(j.localAddress, j.localPort), endpoint(j.remoteAddress, j.remotePort), DIRECTION_SHORT[j.direction], process, j.netns === 0 ? "-" : String(j.netns), j.source];
}

export function compareConnections(a: pb.Connection, b: pb.Connection): number {
  return a.localAddress.localeCompare(b.localAddress) || a.localPort - b.localPort ||
    a.remoteAddress.localeCompare(b.remoteAddress) || a.remotePort - b.remotePort || a.networkNamespace - b.networkNamespace;
}

/** Columns padded to their widest cell, like ss. */
export function formatTable(rows: string[][]): string {
  const widths = rows.reduce((w, row) => row.map((cell, i) => Math.max(w[i] ?? 0, cell.length)), [] as number[]);
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join("  ").trimEnd()).join("\n") + "\n";
}

/** Watch lines cannot know later widths: fixed columns wide enough for IPv4 and most IPv6. */
const WATCH_WIDTHS = [6, 28, 28, 4, 22, 11];

export function formatWatchLine(cells: string[]): string {
  return cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(WATCH_WIDTHS[i] ?? 0))).join(" ").trimEnd() + "\n";
}

export function eventName(type: pb.EventType): string {
  switch (type) {
    case pb.EventType.EVENT_TYPE_SNAPSHOT: return "snapshot";
    case pb.EventType.EVENT_TYPE_SNAPSHOT_COMPLETE: return "snapshot_complete";
    case pb.EventType.EVENT_TYPE_OPEN: return "open";
    case pb.EventType.EVENT_TYPE_CLOSE: return "close";
    default: return "unknown";
  }
}

const EVENT_MARK: Record<string, string> = { snapshot: "=", open: "+", close: "-" };

export function watchEventLine(event: pb.ConnectionEvent): string {
  const name = eventName(event.type);
  if (name === "snapshot_complete") return `--- ${event.snapshotCount} open connections; following opens (+) and closes (-) ---\n`;
  if (event.connection === undefined) return "";
  return formatWatchLine([EVENT_MARK[name] ?? "?", ...connectionRow(event.connection)]);
}

export function watchHeader(): string {
  return formatWatchLine(["Event", ...HEADER]);
}

const SOURCE_LABEL: Record<string, string> = { ebpf: "eBPF", procfs: "/proc scanning", unknown: "unknown" };

export function formatStatus(s: pb.TrackerStatus, now: number = Date.now()): string {
  const j = statusJson(s)!;
  const sinceMs = s.since?.getTime() ?? s.sinceUnixMs;
  const lines = [
    `source:   ${SOURCE_LABEL[j.source] ?? j.source}`,
    `since:    ${j.since} (${formatAge(now - sinceMs)} ago)`,
    `reason:   ${j.reason || "-"}`,
    `clients:  ${j.clients} with closed-connection buffers, ${j.watchers} watching`,
    ...(s.conntrack === undefined ? [] : [`nat:      ${s.conntrack.enabled ? `on: ${s.conntrack.reason}` : s.conntrack.reason} (${s.conntrack.natFlows} NATed flows, ${s.conntrack.lostEvents} lost events)`]),
    "counters:",
  ];
  const counters = Object.entries(j.counters);
  const width = Math.max(0, ...counters.map(([k]) => k.length));
  for (const [name, value] of counters) lines.push(`  ${name.padEnd(width)}  ${value}`);
  const delivery = Object.entries(j.delivery);
  if (delivery.length > 0) {
    lines.push("delivery:");
    const w = Math.max(0, ...delivery.map(([k]) => k.length));
    for (const [name, value] of delivery) lines.push(`  ${name.padEnd(w)}  ${value}`);
  }
  return lines.join("\n") + "\n";
}

export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}
