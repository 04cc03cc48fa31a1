import t from "tap";
import { ReorderBuffer } from "../../plugin/ebpf/reorder-buffer.ts";
import { EventApplier } from "../../plugin/ebpf/event-applier.ts";
import type { TrackerEvent } from "../../plugin/ebpf/decode.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { createReportBackend } from "../../plugin/table/report-backend.ts";
import { emptyCounters } from "../../plugin/model/status.ts";

function ev(type: TrackerEvent["type"], ts: number, port = 5000, cookie = 1): TrackerEvent {
  return { type, timestampNs: ts, pid: 42, comm: "x", netns: 1, localAddress: "10.0.0.1", localPort: port, remoteAddress: "10.0.0.2", remotePort: 80, cpu: 0, sockCookie: cookie };
}

const MS = 1_000_000;

t.test("events leave in timestamp order once older than the window", async (t) => {
  const buffer = new ReorderBuffer(50);
  buffer.push([ev("close", 20 * MS), ev("connect", 10 * MS)]);
  t.equal(buffer.heldBack, 1, "the out-of-order arrival is counted");
  t.same(buffer.release(55 * MS), [], "nothing is old enough yet");
  t.same(buffer.release(65 * MS).map((e) => e.type), ["connect"]);
  t.same(buffer.release(75 * MS).map((e) => e.type), ["close"]);
  t.equal(buffer.pending, 0);
});

t.test("a connect and its close arriving reversed are applied in the right order", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const backend = createReportBackend(table, () => ({ source: "ebpf", sinceMs: 0, reason: "", counters: emptyCounters() }));
  backend.report("probe");
  const buffer = new ReorderBuffer(50);
  const applier = new EventApplier(table);
  buffer.push([ev("close", 2 * MS), ev("connect", 1 * MS)]);
  applier.apply(buffer.release(100 * MS));
  t.equal(table.size, 0, "nothing left open");
  t.equal(table.closesOfUnknown, 0);
  const report = backend.report("probe");
  t.same(report.connections.map((c) => [c.direction, c.closed]), [["outgoing", true]]);
});

t.test("an accept reported after its own close is applied as opened and closed", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const applier = new EventApplier(table);
  const closes: string[] = [];
  table.subscribe((c) => closes.push(`${c.type}:${c.connection.direction}`));
  applier.apply([ev("close", 1 * MS, 6000, 77), ev("accept", 2 * MS, 6000, 77)]);
  t.equal(table.size, 0);
  t.same(closes, ["open:incoming", "close:incoming"]);
  t.equal(applier.pairedLateOpens, 1);
});

t.test("an orphan close of another socket does not close a new connection on the same tuple", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const applier = new EventApplier(table);
  applier.apply([ev("close", 1 * MS, 6000, 1), ev("accept", 2 * MS, 6000, 2)]);
  t.equal(table.size, 1);
});
