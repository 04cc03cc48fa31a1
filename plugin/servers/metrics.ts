/**
 * Optional Prometheus endpoint (prom-client): the tracker's status as metrics, collected on scrape,
 * plus the latency of every report served, by caller kind (grpc, scope, anonymous).
 */
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ReportBackend } from "../model/backend.ts";
import type { Logger } from "../log.ts";
import { parseHostPort } from "./grpc/listen-config.ts";

export interface MetricsHandle {
  readonly address: string;
  /** The backend, wrapped so that every report's latency is observed. */
  readonly backend: ReportBackend;
  close(): Promise<void>;
}

export function createMetrics(backend: ReportBackend): { registry: Registry; backend: ReportBackend } {
  const registry = new Registry();
  const status = () => backend.status();
  const counterFrom = (name: string, help: string, read: (s: ReturnType<typeof status>) => number) =>
    new Counter({ name, help, registers: [registry], collect() { this.reset(); this.inc(read(status())); } });
  counterFrom("endpoint_reporter_events_total", "Kernel events received", (s) => s.counters.events);
  counterFrom("endpoint_reporter_events_lost_total", "Kernel events lost (ring buffer full)", (s) => s.counters.lost);
  counterFrom("endpoint_reporter_program_runs_skipped_total", "Runs of the BPF programs the kernel skipped (another BPF program on that CPU); healed by reconcile", (s) => s.counters.skipped);
  counterFrom("endpoint_reporter_state_changes_backstopped_total", "State changes the kernel skipped the first tp_btf program for, done by its backstop program (not missed)", (s) => s.counters.backstopped);
  counterFrom("endpoint_reporter_malformed_records_total", "Ring-buffer records that did not decode, dropped", (s) => s.counters.malformedRecords);
  counterFrom("endpoint_reporter_restarts_total", "eBPF tracker restarts", (s) => s.counters.restarts);
  counterFrom("endpoint_reporter_fallbacks_total", "Switches to /proc scanning", (s) => s.counters.fallbacks);
  counterFrom("endpoint_reporter_reconcile_added_total", "Connections added by /proc reconcile", (s) => s.counters.reconcileAdded);
  counterFrom("endpoint_reporter_reconcile_removed_total", "Connections removed by /proc reconcile", (s) => s.counters.reconcileRemoved);
  counterFrom("endpoint_reporter_evictions_total", "Connections evicted by the table cap", (s) => s.counters.evictions);
  counterFrom("endpoint_reporter_bad_size_records_total", "Ring-buffer records of the wrong size (addon and BPF object from different headers); the tracker dies of them", (s) => s.counters.badSizeRecords);
  counterFrom("endpoint_reporter_accept_no_sock_total", "Accepts whose fd the kernel side could not resolve to a socket", (s) => s.counters.acceptNoSock);
  counterFrom("endpoint_reporter_connect_no_pid_total", "Connects established with no pid recorded (opened before attach)", (s) => s.counters.connectNoPid);
  counterFrom("endpoint_reporter_late_events_total", "Records older than one already applied, applied out of order", (s) => s.counters.lateEvents);
  counterFrom("endpoint_reporter_scan_errors_total", "/proc reads that failed (not a vanished process)", (s) => s.counters.scanErrors);
  counterFrom("endpoint_reporter_scan_failures_total", "Whole /proc scans that failed and changed nothing", (s) => s.counters.scanFailures);
  counterFrom("endpoint_reporter_reconciles_total", "Reconciles run (periodic or healing): each a comparison with a scan", (s) => s.counters.reconciles);
  counterFrom("endpoint_reporter_reconciles_confirmed_total", "Reconciles the kernel's snapshot confirmed whole by digest (nothing compared one by one)", (s) => s.counters.reconcilesConfirmed);
  counterFrom("endpoint_reporter_reconciles_partial_total", "Reconciles the digest confirmed in part: only the differing buckets of the table were compared one by one", (s) => s.counters.reconcilesPartial);
  counterFrom("endpoint_reporter_reconcile_kept_total", "Connections a reconcile kept because their namespace's table failed to read", (s) => s.counters.reconcileKept);
  counterFrom("endpoint_reporter_internal_errors_total", "Failures inside the plugin's supervision, logged", (s) => s.counters.internalErrors);
  const deliveryFrom = (name: string, help: string, read: (d: ReturnType<ReportBackend["delivery"]>) => number) =>
    new Counter({ name, help, registers: [registry], collect() { this.reset(); this.inc(read(backend.delivery())); } });
  deliveryFrom("endpoint_reporter_grpc_reports_undelivered_total", "gRPC Report answers that did not reach their client; their closes were offered again", (d) => d.grpcReportsUndelivered);
  deliveryFrom("endpoint_reporter_scope_bodies_undelivered_total", "Scope /report bodies not sent whole (the probe went away first); their closes were kept", (d) => d.scopeBodiesUndelivered);
  deliveryFrom("endpoint_reporter_clients_evicted_total", "Client ids forgotten because their kind held the most allowed", (d) => d.clientsEvicted);
  deliveryFrom("endpoint_reporter_clients_expired_total", "Client ids forgotten after not asking for the client expiry", (d) => d.clientsExpired);
  deliveryFrom("endpoint_reporter_closes_of_evicted_total", "Real closes of connections evicted earlier by the table cap", (d) => d.closesOfEvicted);
  new Gauge({
    name: "endpoint_reporter_source", help: "1 for the live source", labelNames: ["source"], registers: [registry],
    collect() {
      const live = status().source;
      for (const source of ["ebpf", "procfs"]) this.set({ source }, source === live ? 1 : 0);
    },
  });
  new Gauge({
    name: "endpoint_reporter_fd_walk_native", help: "1 when /proc scans use the native fd walk, 0 for the JS one (GetStatus fd_walk says why)", registers: [registry],
    collect() {
      const walk = status().fdWalk;
      if (walk !== undefined) this.set(walk.startsWith("native") ? 1 : 0);
    },
  });
  new Gauge({ name: "endpoint_reporter_connections_tracked", help: "Open connections in the table", registers: [registry], collect() { this.set(status().counters.connectionsTracked); } });
  new Gauge({ name: "endpoint_reporter_clients", help: "Clients holding closed-connection buffers", registers: [registry], collect() { this.set(backend.clientCount()); } });
  const latency = new Histogram({
    name: "endpoint_reporter_report_seconds", help: "Time to assemble a report", labelNames: ["caller"], registers: [registry],
    buckets: [0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
  });
  const time = <T>(clientId: string, build: () => T): T => {
    const end = latency.startTimer({ caller: clientId === "" ? "anonymous" : clientId.split(":")[0] });
    try {
      return build();
    } finally {
      end();
    }
  };
  const timed: ReportBackend = {
    ...backend,
    report: (clientId) => time(clientId, () => backend.report(clientId)),
    prepareReport: (clientId) => time(clientId, () => backend.prepareReport(clientId)),
  };
  return { registry, backend: timed };
}

export async function startMetricsServer(listen: string, backend: ReportBackend, log: Logger): Promise<MetricsHandle> {
  const { host, port } = parseHostPort(listen);
  const { registry, backend: timed } = createMetrics(backend);
  const server: Server = createServer((req, res) => {
    if (req.method !== "GET" || req.url?.split("?")[0] !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
      (error) => {
        log.warn("metrics collection failed", { error: String(error) });
        res.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const bound = server.address();
  const address = typeof bound === "object" && bound !== null ? `${bound.address}:${bound.port}` : listen;
  return {
    address,
    backend: timed,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
