/** The tracker's self-description, shown in every report so that nobody has to guess which source is live. */
import type { SourceKind } from "./connection.ts";

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

/** Which BPF program serves one kernel hook, and why that type (native/src/attach_plan.c decides). */
export interface ProgramAttachment {
  /** The kernel hook: "inet_sock_set_state", "sys_exit_accept", "sys_exit_accept4". */
  hook: string;
  /** "tp_btf" (BTF raw tracepoint) or "tracepoint" (classic); null when the hook is not attached on this kernel. */
  type: "tp_btf" | "tracepoint" | null;
  /** The program's ELF section in build/tracker.bpf.o; null when not attached. */
  program: string | null;
  reason: string;
}

export interface TrackerStatus {
  source: SourceKind;
  /** Milliseconds since the epoch when the live source became live. */
  sinceMs: number;
  /** Why this source is live: the exact error or the policy that chose it. */
  reason: string;
  counters: TrackerCounters;
  /** While eBPF is live: what got attached to each hook and why. Absent otherwise. */
  attachments?: ProgramAttachment[];
}

export function emptyCounters(): TrackerCounters {
  return {
    events: 0, lost: 0, reordersHeldBack: 0, restarts: 0, fallbacks: 0,
    reconcileAdded: 0, reconcileRemoved: 0, connectionsTracked: 0,
    failedConnects: 0, closesOfUnknown: 0, evictions: 0, skipped: 0, malformedRecords: 0,
  };
}
