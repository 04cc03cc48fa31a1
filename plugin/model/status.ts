/** The tracker's self-description, shown in every report so that nobody has to guess which source is live. */
import type { SourceKind } from "./connection.ts";
import type { ConntrackStatus } from "../conntrack/conntrack-source.ts";

export interface TrackerCounters {
  events: number;
  lost: number;
  reordersHeldBack: number;
  restarts: number;
  fallbacks: number;
  reconcileAdded: number;
  reconcileRemoved: number;
  connectionsTracked: number;
  failedConnects: number;
  closesOfUnknown: number;
  evictions: number;
  /** Runs of our BPF programs the kernel skipped (recursion protection): healed by reconcile, never fatal. */
  skipped: number;
  malformedRecords: number;
}

export interface TrackerStatus {
  source: SourceKind;
  /** Milliseconds since the epoch when the live source became live. */
  sinceMs: number;
  /** Why this source is live: the exact error or the policy that chose it. */
  reason: string;
  counters: TrackerCounters;
  /** NAT mapping from conntrack: on or off and why (absent where no conntrack source was set up). */
  conntrack?: ConntrackStatus;
}

export function emptyCounters(): TrackerCounters {
  return {
    events: 0, lost: 0, reordersHeldBack: 0, restarts: 0, fallbacks: 0,
    reconcileAdded: 0, reconcileRemoved: 0, connectionsTracked: 0,
    failedConnects: 0, closesOfUnknown: 0, evictions: 0, skipped: 0, malformedRecords: 0,
  };
}
