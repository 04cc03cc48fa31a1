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
  /** State changes the kernel skipped the first tp_btf program for and its backstop program did: not missed. */
  backstopped: number;
  malformedRecords: number;
  /** Ring-buffer records of the wrong size (addon and BPF object built from different headers): fatal for the tracker. */
  badSizeRecords: number;
  /** Accepts whose returned fd the kernel side could not resolve to a socket (the connection waits for a reconcile). */
  acceptNoSock: number;
  /** Connects seen established with no pid recorded at SYN_SENT (opened before attach): pid 0 until a scan. */
  connectNoPid: number;
  /** Records older than one already applied (beyond the hold-back window): applied anyway, out of order. */
  lateEvents: number;
  /** /proc reads that failed for a reason other than a process vanishing (EACCES, EIO, ...). */
  scanErrors: number;
  /** Whole /proc scans that failed (the proc root could not be listed): nothing was changed by them. */
  scanFailures: number;
  /** Reconciles run (periodic, healing a loss or skipped runs, or asked for): each a /proc comparison. */
  reconciles: number;
  /**
   * Of those, reconciles the kernel's snapshot confirmed whole: its digest (tuple, namespace, pid,
   * name of every open socket) equalled the table's, so nothing was compared one by one.
   */
  reconcilesConfirmed: number;
  /**
   * Of those, reconciles the digest confirmed in part: only the buckets of the table (256, by
   * ports) whose digest differed, or that changed during the walk, were compared one by one.
   */
  reconcilesPartial: number;
  /** Connections a reconcile did not close because their namespace's table failed to read. */
  reconcileKept: number;
  /** Failures inside the plugin's own supervision (a counters poll or a death handler that threw): logged, counted. */
  internalErrors: number;
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
  /** NAT mapping from conntrack: on or off and why (absent where no conntrack source was set up). */
  conntrack?: ConntrackStatus;
  /** How /proc scans map sockets to processes, and why that walk (the native one, or JS and why not native). */
  fdWalk?: string;
  /** While eBPF is live: what got attached to each hook and why. Absent otherwise. */
  attachments?: ProgramAttachment[];
}

export function emptyCounters(): TrackerCounters {
  return {
    events: 0, lost: 0, reordersHeldBack: 0, restarts: 0, fallbacks: 0,
    reconcileAdded: 0, reconcileRemoved: 0, connectionsTracked: 0,
    failedConnects: 0, closesOfUnknown: 0, evictions: 0, skipped: 0, backstopped: 0, malformedRecords: 0,
    badSizeRecords: 0, acceptNoSock: 0, connectNoPid: 0, lateEvents: 0,
    scanErrors: 0, scanFailures: 0, reconciles: 0, reconcilesConfirmed: 0, reconcilesPartial: 0, reconcileKept: 0, internalErrors: 0,
  };
}
