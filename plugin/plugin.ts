/**
 * The composition root: one table, the supervisor that feeds it, the backend the servers read.
 * Servers are attached by plugin/main.ts; tests build the same stack without them.
 */
import type { Config } from "./config.ts";
import { PluginError } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { ReportBackend } from "./model/backend.ts";
import type { TrackerStatus } from "./model/status.ts";
import { heuristicDirection, scanProc } from "./procfs/index.ts";
import { fdWalkChoice } from "./procfs/fd-walk.ts";
import { ScanSource } from "./snapshot/scan-source.ts";
import { readKernelFacts } from "./supervisor/kernel-support.ts";
import { Supervisor, defaultPolicy, type ScanOutcome } from "./supervisor/supervisor.ts";
import { ConnectionTable } from "./table/connection-table.ts";
import { createReportBackend } from "./table/report-backend.ts";
import { setActiveFlows } from "./conntrack/active.ts";
import { ConntrackSource } from "./conntrack/conntrack-source.ts";
import { ProcfsConntrack } from "./conntrack/procfs-conntrack.ts";

export interface TrackerStack {
  table: ConnectionTable;
  supervisor: Supervisor;
  /** Which scan seeds and reconciles: the BPF socket iterator while eBPF is live, else /proc. */
  scans: ScanSource;
  conntrack: ConntrackSource;
  backend: ReturnType<typeof createReportBackend>;
  stop(): Promise<void>;
}

export type StackConfig = Pick<Config,
  | "source" | "procRoot" | "btfPath" | "maxConnections" | "maxClosedPerClient" | "clientExpiryMs" | "ringBufferBytes"
  | "drainIntervalMs" | "holdBackMs" | "reconcileIntervalMs" | "procPollIntervalMs" | "deathWindowMs" | "ebpfRetryMs" | "debugBpfStopFile"
  | "conntrack"
> & {
  kernelOverride?: { release: string; version: string };
  /** --source ebpf: first restart back-off after deaths (defaultPolicy.requiredRetryFirstMs). */
  requiredRetryMs?: number;
  /** The socket snapshot iterator's object (build/snapshot.bpf.o); tests point it elsewhere to make /proc the scan. */
  snapshotObjectPath?: string;
};

export const defaultStackConfig: StackConfig = {
  source: "auto",
  procRoot: "/proc",
  btfPath: "/sys/kernel/btf/vmlinux",
  maxConnections: 65_536,
  maxClosedPerClient: 65_536,
  clientExpiryMs: 120_000,
  ringBufferBytes: 4 * 1024 * 1024,
  drainIntervalMs: 20,
  holdBackMs: 50,
  reconcileIntervalMs: defaultPolicy.reconcileIntervalMs,
  procPollIntervalMs: defaultPolicy.procPollIntervalMs,
  deathWindowMs: defaultPolicy.deathWindowMs,
  ebpfRetryMs: defaultPolicy.firstRetryMs,
  debugBpfStopFile: "",
  conntrack: true,
};

/** `signal` stops a start in progress: the seed scan is abandoned and the start rejects (ERR_STOPPED). */
export async function startTrackerStack(config: StackConfig, log: Logger, signal?: AbortSignal): Promise<TrackerStack> {
  const table = new ConnectionTable({ maxConnections: config.maxConnections });
  let supervisor: Supervisor | undefined;
  const scans = new ScanSource({
    procfs: (signal) => scanProcForSupervisor(config.procRoot, signal),
    ebpfLive: () => supervisor?.trackerAttached ?? false,
    procRoot: config.procRoot,
    objectPath: config.snapshotObjectPath,
    table,
    log: log.child({ component: "scan" }),
  });
  // Conntrack first, so that the seeding scan already finds the flows' directions.
  const conntrack = new ConntrackSource({
    procRoot: config.procRoot,
    retryMs: 60_000,
    flows: { holdsLocalPort: (port) => table.hasLocalPort(port) },
    disabled: config.conntrack ? undefined : "configured: --no-conntrack",
  }, log.child({ component: "conntrack" }));
  conntrack.start();
  setActiveFlows(conntrack.flows);
  const procfsConntrack = new ProcfsConntrack(conntrack, table, () => supervisor?.status().source === "procfs");
  const status = () => {
    const s = withScanSource(supervisor!.status(), scans);
    const ct = conntrack.status();
    return { ...s, conntrack: { ...ct, counters: { ...ct.counters, ...procfsConntrack.counters } } };
  };
  const backend = createReportBackend(table, status, {
    maxClosedPerClient: config.maxClosedPerClient,
    clientExpiryMs: config.clientExpiryMs,
  });
  const kernel = { ...readKernelFacts(config.procRoot, config.btfPath), ...config.kernelOverride };
  const walk = fdWalkChoice();
  if (walk.walker.kind !== "native") log.warn("/proc scans walk fds in JS", { reason: walk.reason });
  supervisor = new Supervisor(table, {
    source: config.source,
    kernel,
    ebpf: {
      ringBufferBytes: config.ringBufferBytes,
      drainIntervalMs: config.drainIntervalMs,
      holdBackMs: config.holdBackMs,
      debugKillFile: config.debugBpfStopFile || undefined,
    },
    scan: procfsConntrack.wrap((signal) => scans.scan(signal)),
    fdWalk: () => fdWalkChoice().reason,
    heuristic: heuristicDirection,
    reconcileIntervalMs: config.reconcileIntervalMs,
    procPollIntervalMs: config.procPollIntervalMs,
    deathWindowMs: config.deathWindowMs,
    firstRetryMs: config.ebpfRetryMs,
    maxRetryMs: defaultPolicy.maxRetryMs,
    requiredRetryFirstMs: config.requiredRetryMs ?? defaultPolicy.requiredRetryFirstMs,
  }, log.child({ component: "supervisor" }));
  const stopOnSignal = () => void supervisor!.stop();
  signal?.addEventListener("abort", stopOnSignal, { once: true });
  try {
    if (signal?.aborted) throw new PluginError("ERR_STOPPED", "stopped before start-up");
    await supervisor.start();
  } finally {
    signal?.removeEventListener("abort", stopOnSignal);
  }
  const expiry = setInterval(() => backend.clients.expireIdle(), Math.max(1000, Math.floor(config.clientExpiryMs / 4)));
  expiry.unref?.();
  return {
    table,
    supervisor,
    scans,
    conntrack,
    backend,
    async stop() {
      clearInterval(expiry);
      await supervisor!.stop();
      scans.close();
      conntrack.stop();
      setActiveFlows(undefined);
    },
  };
}

/** While eBPF is live, the reason also says where seeds and reconciles come from (the iterator, or /proc and why). */
function withScanSource(status: TrackerStatus, scans: ScanSource): TrackerStatus {
  return status.source === "ebpf" ? { ...status, reason: `${status.reason}; ${scans.describe()}` } : status;
}

/**
 * A /proc scan as the supervisor needs it: the connections, the read errors, and which namespaces
 * it can vouch for. A namespace whose table failed to read, or one missing from the scan while some
 * process's namespace could not be read, may still hold connections the scan did not see.
 */
export async function scanProcForSupervisor(procRoot: string, signal?: AbortSignal): Promise<ScanOutcome> {
  const scan = await scanProc({ procRoot, signal });
  return {
    connections: scan.connections,
    errors: scan.errors,
    readInFull: (netns) => !scan.unreadNamespaces.has(netns) && (scan.listening.has(netns) || scan.unplacedProcesses === 0),
  };
}

export type { ReportBackend };
