import t from "tap";
import { reconcileTable } from "../../plugin/supervisor/reconcile.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { type Connection, connectionKey } from "../../plugin/model/connection.ts";
import { heuristicDirection } from "../../plugin/procfs/index.ts";

function conn(localPort: number, remotePort: number, extra: Partial<Connection> = {}): Connection {
  return { localAddress: "10.0.0.1", localPort, remoteAddress: "10.0.0.2", remotePort, netns: 1, pid: 0, comm: "", direction: "unknown", closed: false, source: "procfs", ...extra };
}

t.test("a close seen during the scan suppresses that connection's seed", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const stale = conn(40000, 80);
  const result = reconcileTable(table, { scanned: [stale], keysBefore: new Set(), closedDuringScan: new Set([connectionKey(stale)]), heuristic: heuristicDirection });
  t.equal(table.size, 0);
  t.equal(result.suppressed, 1);
});

t.test("a connection opened during the scan is kept once, with what the event knew", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  table.open(conn(40000, 80, { source: "ebpf", direction: "outgoing", pid: 5, comm: "curl" }));
  const result = reconcileTable(table, { scanned: [conn(40000, 80)], keysBefore: new Set(), closedDuringScan: new Set(), heuristic: heuristicDirection });
  t.equal(table.size, 1);
  t.equal(result.added, 0);
  t.match(table.get(connectionKey(conn(40000, 80))), { source: "ebpf", direction: "outgoing", pid: 5 });
});

t.test("what the table had before the scan and the kernel no longer has is closed and counted", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const gone = conn(40001, 80, { source: "ebpf", direction: "outgoing" });
  const openedDuringScan = conn(40002, 80, { source: "ebpf", direction: "outgoing" });
  table.open(gone);
  const keysBefore = new Set(table.keys());
  table.open(openedDuringScan);
  const closes: number[] = [];
  table.subscribe((c) => c.type === "close" && closes.push(c.connection.localPort));
  const result = reconcileTable(table, { scanned: [], keysBefore, closedDuringScan: new Set(), heuristic: heuristicDirection });
  t.equal(result.removed, 1);
  t.same(closes, [40001], "clients are told it closed");
  t.ok(table.has(connectionKey(openedDuringScan)), "not removed for missing from a scan that started before it");
});

t.test("an unknown direction falls back to the port heuristic only when nothing better is known", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  reconcileTable(table, { scanned: [conn(40000, 443), conn(22, 51000), conn(8080, 52000, { direction: "incoming" })], keysBefore: new Set(), closedDuringScan: new Set(), heuristic: heuristicDirection });
  t.equal(table.get(connectionKey(conn(40000, 443)))?.direction, "outgoing");
  t.equal(table.get(connectionKey(conn(22, 51000)))?.direction, "incoming");
  t.equal(table.get(connectionKey(conn(8080, 52000)))?.direction, "incoming");
});
