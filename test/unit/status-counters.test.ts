/**
 * Every counter the supervisor keeps reaches what people read: GetStatus (the wire message, through
 * a real encode and decode) and Prometheus metrics; the fd walk is named in both.
 */
import t from "tap";
import { TrackerStatus as WireStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { emptyCounters, type TrackerStatus } from "../../plugin/model/status.ts";
import { statusToWire } from "../../plugin/servers/grpc/convert.ts";
import { createMetrics } from "../../plugin/servers/metrics.ts";
import { makeBackend } from "../helpers/server-harness.ts";

const counters = { ...emptyCounters(), badSizeRecords: 1, acceptNoSock: 2, connectNoPid: 3, lateEvents: 4, scanErrors: 5, scanFailures: 6, reconcileKept: 7, internalErrors: 8, reconciles: 9, backstopped: 10 };
const status: TrackerStatus = { source: "ebpf", sinceMs: 0, reason: "test", counters, fdWalk: "JS fd walk (slower): the native one failed to load: ERR_BPF_ADDON: gone" };

t.test("GetStatus carries the new counters and the fd walk through the wire", async (t) => {
  const decoded = WireStatus.decode(WireStatus.encode(statusToWire(status, { clients: 0, watchers: 0 })).finish());
  t.match(decoded.counters, { badSizeRecords: 1, acceptNoSock: 2, connectNoPid: 3, lateEvents: 4, scanErrors: 5, scanFailures: 6, reconcileKept: 7, internalErrors: 8, reconciles: 9, backstopped: 10 });
  t.match(decoded.fdWalk, /^JS fd walk .*ERR_BPF_ADDON/);
});

t.test("metrics expose them", async (t) => {
  const { backend } = makeBackend();
  const { registry } = createMetrics({ ...backend, status: () => status });
  const text = await registry.metrics();
  for (const [name, value] of [
    ["endpoint_reporter_bad_size_records_total", 1], ["endpoint_reporter_accept_no_sock_total", 2], ["endpoint_reporter_connect_no_pid_total", 3],
    ["endpoint_reporter_late_events_total", 4], ["endpoint_reporter_scan_errors_total", 5], ["endpoint_reporter_scan_failures_total", 6],
    ["endpoint_reporter_reconcile_kept_total", 7], ["endpoint_reporter_internal_errors_total", 8], ["endpoint_reporter_reconciles_total", 9],
    ["endpoint_reporter_state_changes_backstopped_total", 10],
    ["endpoint_reporter_fd_walk_native", 0],
  ] as const) {
    t.match(text, new RegExp(`^${name} ${value}$`, "m"), name);
  }
});
