/** Model types to the wire messages of scope.endpoint.v1, and back (for clients such as the CLI). */
import type { Connection, Direction, SourceKind } from "../../model/connection.ts";
import type { TrackerStatus } from "../../model/status.ts";
import type { DeliveryCounters } from "../../model/backend.ts";
import * as pb from "../../generated/endpoint_reporter.ts";
import { translationFor } from "../../conntrack/active.ts";

const directionToWire: Record<Direction, pb.Direction> = {
  incoming: pb.Direction.DIRECTION_INCOMING,
  outgoing: pb.Direction.DIRECTION_OUTGOING,
  unknown: pb.Direction.DIRECTION_UNKNOWN,
};

const sourceToWire: Record<SourceKind, pb.Source> = {
  ebpf: pb.Source.SOURCE_EBPF,
  procfs: pb.Source.SOURCE_PROCFS,
};

export function connectionToWire(c: Connection): pb.Connection {
  const nat = translationFor(c);
  return {
    localAddress: c.localAddress,
    localPort: c.localPort,
    remoteAddress: c.remoteAddress,
    remotePort: c.remotePort,
    networkNamespace: c.netns,
    pid: c.pid,
    comm: c.comm,
    direction: directionToWire[c.direction] ?? pb.Direction.DIRECTION_UNKNOWN,
    closed: c.closed,
    source: sourceToWire[c.source] ?? pb.Source.SOURCE_UNKNOWN,
    natLocalAddress: nat?.localAddress ?? "",
    natLocalPort: nat?.localPort ?? 0,
    natRemoteAddress: nat?.remoteAddress ?? "",
    natRemotePort: nat?.remotePort ?? 0,
  };
}

export interface StatusExtras {
  clients: number;
  watchers: number;
  delivery?: DeliveryCounters;
}

export function statusToWire(s: TrackerStatus, extras: StatusExtras): pb.TrackerStatus {
  return {
    source: sourceToWire[s.source] ?? pb.Source.SOURCE_UNKNOWN,
    since: new Date(s.sinceMs),
    sinceUnixMs: s.sinceMs,
    reason: s.reason,
    counters: { ...s.counters },
    attachments: (s.attachments ?? []).map((a) => ({ hook: a.hook, type: a.type ?? "", program: a.program ?? "", reason: a.reason })),
    clients: extras.clients,
    watchers: extras.watchers,
    fdWalk: s.fdWalk ?? "",
    delivery: extras.delivery === undefined ? undefined : { ...extras.delivery },
    conntrack: s.conntrack === undefined ? undefined : {
      directionsFromConntrack: 0, shortLivedReported: 0, ...s.conntrack.counters, enabled: s.conntrack.enabled, reason: s.conntrack.reason,
    },
  };
}

export function directionName(d: pb.Direction): Direction {
  if (d === pb.Direction.DIRECTION_INCOMING) return "incoming";
  if (d === pb.Direction.DIRECTION_OUTGOING) return "outgoing";
  return "unknown";
}

export function sourceName(s: pb.Source): SourceKind | "unknown" {
  if (s === pb.Source.SOURCE_EBPF) return "ebpf";
  if (s === pb.Source.SOURCE_PROCFS) return "procfs";
  return "unknown";
}
