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
  const result = await reconcileTable(table, { scanned: [stale], openedDuringScan: new Set(), closedDuringScan: new Set([connectionKey(stale)]), heuristic: heuristicDirection });
  t.equal(table.size, 0);
  t.equal(result.suppressed, 1);
});

t.test("a connection opened during the scan is kept once, with what the event knew", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  table.open(conn(40000, 80, { source: "ebpf", direction: "outgoing", pid: 5, comm: "curl" }));
  const result = await reconcileTable(table, { scanned: [conn(40000, 80)], openedDuringScan: new Set([connectionKey(conn(40000, 80))]), closedDuringScan: new Set(), heuristic: heuristicDirection });
  t.equal(table.size, 1);
  t.equal(result.added, 0);
  t.match(table.get(connectionKey(conn(40000, 80))), { source: "ebpf", direction: "outgoing", pid: 5 });
});

t.test("what the table had before the scan and the kernel no longer has is closed and counted", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const gone = conn(40001, 80, { source: "ebpf", direction: "outgoing" });
  const openedDuringScan = conn(40002, 80, { source: "ebpf", direction: "outgoing" });
  table.open(gone);
  table.open(openedDuringScan);
  const closes: number[] = [];
  table.subscribe((c) => c.type === "close" && closes.push(c.connection.localPort));
  const result = await reconcileTable(table, { scanned: [], openedDuringScan: new Set([connectionKey(openedDuringScan)]), closedDuringScan: new Set(), heuristic: heuristicDirection });
  t.equal(result.removed, 1);
  t.same(closes, [40001], "clients are told it closed");
  t.ok(table.has(connectionKey(openedDuringScan)), "not removed for missing from a scan that started before it");
});

t.test("an unknown direction falls back to the port heuristic only when nothing better is known", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  await reconcileTable(table, { scanned: [conn(40000, 443), conn(22, 51000), conn(8080, 52000, { direction: "incoming" })], openedDuringScan: new Set(), closedDuringScan: new Set(), heuristic: heuristicDirection });
  t.equal(table.get(connectionKey(conn(40000, 443)))?.direction, "outgoing");
  t.equal(table.get(connectionKey(conn(22, 51000)))?.direction, "incoming");
  t.equal(table.get(connectionKey(conn(8080, 52000)))?.direction, "incoming");
});

t.test("a known connection the scan confirms unchanged is left in place: no copy, no publish, the report snapshot kept", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const known = conn(40000, 80, { source: "ebpf", direction: "outgoing", pid: 5, comm: "curl" });
  table.open(known);
  table.open(conn(40001, 80, { source: "ebpf", direction: "outgoing", pid: 6, comm: "wget" }));
  const before = table.snapshot();
  const changes: string[] = [];
  table.subscribe((c) => changes.push(c.type));
  // The scan knows the same pid and name, and no direction: nothing to change.
  const result = await reconcileTable(table, {
    scanned: [conn(40000, 80, { pid: 5, comm: "curl" }), conn(40001, 80, { pid: 7, comm: "wget" })], openedDuringScan: new Set(), closedDuringScan: new Set(), heuristic: heuristicDirection,
  });
  t.same(result, { added: 0, removed: 0, suppressed: 0, kept: 0, updated: 1 }, "one changed pid, nothing else");
  t.equal(table.get(connectionKey(known)), known, "the unchanged entry is the same object");
  t.match(table.get(connectionKey(conn(40001, 80))), { pid: 7, direction: "outgoing", source: "ebpf" }, "the changed one took the scan's pid and kept the event's direction");
  t.same([...table.keys()], [connectionKey(known), connectionKey(conn(40001, 80))], "both kept their places");
  t.not(table.snapshot(), before, "a change invalidates the report snapshot");
  t.same(changes, [], "a refresh publishes nothing");
  const again = table.snapshot();
  await reconcileTable(table, { scanned: [conn(40000, 80), conn(40001, 80)], openedDuringScan: new Set(), closedDuringScan: new Set(), heuristic: heuristicDirection });
  t.equal(table.snapshot(), again, "a reconcile that changes nothing keeps it");
});

t.test("in slices: events applied during the pauses are neither undone nor lost", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100_000 });
  const opened = new Set<string>();
  const closed = new Set<string>();
  table.subscribe((c) => (c.type === "open" ? opened : closed).add(connectionKey(c.connection)));
  // 10,000 known before the scan; the scan has all but the last 2,000 (gone from the kernel).
  for (let p = 0; p < 10_000; p++) table.open(conn(20000 + p, 80, { source: "ebpf", direction: "outgoing", pid: 1, comm: "c" }));
  opened.clear();
  closed.clear();
  const scanned = Array.from({ length: 8000 }, (_, p) => conn(20000 + p, 80, { pid: 1, comm: "c" }));
  let pauses = 0;
  const result = await reconcileTable(table, {
    scanned, openedDuringScan: opened, closedDuringScan: closed, heuristic: heuristicDirection,
    sliceMs: 0, // a pause at every check: the slicing under test, whatever this machine's speed
    breathe: async () => {
      pauses++;
      if (pauses === 1) {
        table.close(connectionKey(conn(27999, 80))); // scanned, closed by an event before its turn
        table.close(connectionKey(conn(29999, 80))); // not scanned: closed by its event, not twice
        table.close(connectionKey(conn(29998, 80))); // closed and opened again: a new connection
        table.open(conn(29998, 80, { source: "ebpf", direction: "outgoing", pid: 2, comm: "n" }));
        table.open(conn(40000, 80, { source: "ebpf", direction: "outgoing", pid: 3, comm: "n" })); // new, not in the scan
      }
      await new Promise((resolve) => setImmediate(resolve));
    },
  });
  t.ok(pauses >= 2, `the work was cut in slices (${pauses} pauses)`);
  t.equal(result.suppressed, 1, "the scan's stale copy of a connection closed during a pause is not re-added");
  t.equal(result.removed, 1998, "every other connection the scan did not see is closed");
  t.notOk(table.has(connectionKey(conn(27999, 80))));
  t.match(table.get(connectionKey(conn(29998, 80))), { pid: 2 }, "reopened during a pause: kept");
  t.ok(table.has(connectionKey(conn(40000, 80))), "opened during a pause: kept");
  t.equal(table.size, 7999 + 2);
  t.equal(table.closesOfUnknown, 0, "nothing closed twice");
});

t.test("a connection the scan vouched for and an event then closed does not hide one that is gone", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10_000 });
  const vouchedThenClosed = conn(20000, 80, { source: "ebpf", direction: "outgoing" });
  const gone = conn(20001, 80, { source: "ebpf", direction: "outgoing" });
  table.open(vouchedThenClosed);
  table.open(gone);
  // The scan: the first one, then 4,095 new ones; the first pause comes before the last of them,
  // after the first was vouched for. Counting alone (4,096 vouched, 4,096 in the table) would miss `gone`.
  const scanned = [vouchedThenClosed, ...Array.from({ length: 4095 }, (_, i) => conn(30000 + i, 80))];
  const closed = new Set<string>();
  const result = await reconcileTable(table, {
    scanned, openedDuringScan: new Set(), closedDuringScan: closed, heuristic: heuristicDirection,
    sliceMs: 0,
    breathe: async () => {
      if (closed.size !== 0) return;
      closed.add(connectionKey(vouchedThenClosed));
      table.close(connectionKey(vouchedThenClosed));
    },
  });
  t.equal(result.added, 4095);
  t.equal(result.removed, 1, "the connection the scan did not see is closed");
  t.notOk(table.has(connectionKey(gone)));
  t.equal(table.size, 4095);
});

t.test("a scan that speaks for part of the table (compares) corrects that part and leaves the rest alone", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10_000 });
  // Ports 20000-20999 are the part compared; 21000-21999 were confirmed as they are and are not in the scan.
  for (let p = 20000; p < 22000; p++) table.open(conn(p, 80, { source: "ebpf", direction: "outgoing", pid: 1, comm: "c" }));
  const compares = (c: Connection) => c.localPort < 21000;
  // The kernel: the compared part but for 20500 (a missed close), plus 20999 with another pid and 20001 twice.
  const scanned = Array.from({ length: 1000 }, (_, i) => conn(20000 + i, 80, { pid: i === 999 ? 2 : 1, comm: "c" })).filter((c) => c.localPort !== 20500);
  scanned.push(conn(20001, 80, { pid: 1, comm: "c" }));
  const opened = new Set<string>();
  const closed = new Set<string>();
  let pauses = 0;
  const result = await reconcileTable(table, {
    scanned, openedDuringScan: opened, closedDuringScan: closed, heuristic: heuristicDirection, compares, sliceMs: 0,
    breathe: async () => {
      if (pauses++ !== 0) return;
      // An event during a pause, in the compared part, after the scan: kept.
      table.open(conn(20777, 81, { source: "ebpf", direction: "outgoing", pid: 3, comm: "n" }));
      opened.add(connectionKey(conn(20777, 81)));
    },
  });
  t.ok(pauses >= 2, "in slices");
  t.equal(result.removed, 1, "the compared part's ghost is closed");
  t.notOk(table.has(connectionKey(conn(20500, 80))));
  t.equal(result.updated, 1, "and its changed pid taken");
  t.match(table.get(connectionKey(conn(20999, 80))), { pid: 2 });
  t.equal(result.added, 0);
  t.ok(table.has(connectionKey(conn(20777, 81))), "opened during a pause: kept");
  t.equal([...table.keys()].filter((k) => table.get(k)!.localPort >= 21000).length, 1000, "nothing outside the compared part is closed, though the scan has none of it");
  t.equal(table.size, 2000 - 1 + 1);
});

t.test("a seed past 64k gives the key set's and the table's doubling a slice each, and a close during that pause still suppresses", async (t) => {
  const table = new ConnectionTable({ maxConnections: 200_000 });
  const scanned: Connection[] = [];
  for (let i = 0; i < 65_540; i++) scanned.push(conn(1024 + (i % 60_000), 80 + Math.floor(i / 60_000)));
  const closed = new Set<string>();
  // Entry 65,536 (0-based) is where both the scan's key set and the table double: in lockstep, as in a seed.
  const doubling = connectionKey(scanned[65_536]);
  const pausesAt: number[] = [];
  const result = await reconcileTable(table, {
    scanned, openedDuringScan: new Set(), closedDuringScan: closed, heuristic: heuristicDirection,
    sliceMs: Number.POSITIVE_INFINITY, // no pause for time: only the ones for a doubling
    breathe: async () => {
      pausesAt.push(table.size);
      // The second pause is the one right before the table's add: an event closes that very connection.
      if (pausesAt.length === 2) closed.add(doubling);
    },
  });
  t.same(pausesAt, [65_536, 65_536, 65_536], "before the set's doubling, before the table's add, after it (the closed entry added nothing)");
  t.equal(result.suppressed, 1, "the close applied during the pause wins over the scan's stale copy");
  t.notOk(table.has(doubling));
  t.equal(table.size, 65_539);
});
