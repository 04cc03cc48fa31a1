import t from "tap";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { type Connection, connectionKey } from "../../plugin/model/connection.ts";
import type { ConnectionChange } from "../../plugin/model/backend.ts";
import { digestBucket } from "../../plugin/model/connection-digest.ts";

function conn(localPort: number, extra: Partial<Connection> = {}): Connection {
  return {
    localAddress: "10.0.0.1", localPort, remoteAddress: "10.0.0.2", remotePort: 80,
    netns: 4026531840, pid: 100, comm: "curl", direction: "outgoing", closed: false, source: "ebpf", ...extra,
  };
}

t.test("open then close publishes each change once, in order", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const seen: ConnectionChange[] = [];
  table.subscribe((c) => seen.push(c));
  t.equal(table.open(conn(1000)), "added");
  t.equal(table.open(conn(1000)), "updated", "a repeated open is a refresh, not a second connection");
  const closed = table.close(connectionKey(conn(1000)));
  t.equal(closed?.closed, true);
  t.same(seen.map((c) => [c.type, c.connection.localPort, c.connection.closed]), [["open", 1000, false], ["close", 1000, true]]);
  t.equal(table.size, 0);
});

t.test("same four-tuple in two namespaces are two connections", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  table.open(conn(1000, { netns: 1 }));
  table.open(conn(1000, { netns: 2 }));
  t.equal(table.size, 2);
});

t.test("close of an unknown connection is counted, not thrown", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  t.equal(table.close("nope"), undefined);
  t.equal(table.closesOfUnknown, 1);
});

t.test("a /proc refresh never erases what an event knew; an event corrects a guess", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  table.open(conn(1000, { source: "ebpf", direction: "incoming", pid: 7, comm: "nginx" }));
  table.open(conn(1000, { source: "procfs", direction: "unknown", pid: 0, comm: "" }));
  const after = table.get(connectionKey(conn(1000)));
  t.match(after, { pid: 7, comm: "nginx", direction: "incoming", source: "ebpf" });
  table.open(conn(2000, { source: "procfs", direction: "outgoing", pid: 0, comm: "" }));
  table.open(conn(2000, { source: "ebpf", direction: "incoming", pid: 9, comm: "srv" }));
  t.match(table.get(connectionKey(conn(2000))), { pid: 9, direction: "incoming", source: "ebpf" });
});

t.test("the cap evicts the least recently confirmed connection and counts it", async (t) => {
  const table = new ConnectionTable({ maxConnections: 3 });
  table.open(conn(1));
  table.open(conn(2));
  table.open(conn(3));
  table.open(conn(1)); // confirmed again: now the freshest
  table.open(conn(4));
  t.equal(table.size, 3);
  t.equal(table.evictions, 1);
  t.notOk(table.has(connectionKey(conn(2))), "the oldest unconfirmed one left");
  t.ok(table.has(connectionKey(conn(1))));
});

t.test("unsubscribe stops delivery", async (t) => {
  const table = new ConnectionTable({ maxConnections: 3 });
  let n = 0;
  const off = table.subscribe(() => n++);
  table.open(conn(1));
  off();
  table.open(conn(2));
  t.equal(n, 1);
  t.equal(table.subscriberCount, 0);
});

t.test("a snapshot is the open connections, shared until the next change, and never changed after", async (t) => {
  const table = new ConnectionTable({ maxConnections: 2 });
  table.open(conn(1));
  table.open(conn(2));
  const first = table.snapshot();
  t.strictSame(first.map((c) => c.localPort), [1, 2]);
  t.equal(table.snapshot(), first, "no change: the same array, no copy per report");
  const changes: Array<[string, () => unknown]> = [
    ["an open", () => table.open(conn(3))], // also evicts port 1
    ["a refresh", () => table.open(conn(2))],
    ["a close", () => table.close(connectionKey(conn(3)))],
  ];
  let previous = first;
  for (const [what, change] of changes) {
    const before = previous.map((c) => c.localPort);
    change();
    const next = table.snapshot();
    t.not(next, previous, `${what} gives a new snapshot`);
    t.strictSame(previous.map((c) => c.localPort), before, `${what} leaves the snapshot a reader holds as it was`);
    t.strictSame(next, [...table.values()], `${what}: the new one is the table`);
    previous = next;
  }
  t.strictSame(previous.map((c) => c.localPort), [2]);
});

t.test("every change is counted in its connection's digest bucket, and only there (what a partial reconcile relies on)", async (t) => {
  const table = new ConnectionTable({ maxConnections: 2 });
  const a = conn(40000);
  const bucketOf = (c: Connection) => digestBucket(c.localPort, c.remotePort);
  const count = (c: Connection) => table.changesByBucket[bucketOf(c)];
  const total = () => table.changesByBucket.reduce((n, x) => n + x, 0);
  table.open(a);
  t.equal(count(a), 1, "open");
  t.equal(table.confirm(a, connectionKey(a)), "unchanged");
  t.equal(count(a), 1, "a confirm that changes nothing is no change");
  table.confirm({ ...a, pid: 999 }, connectionKey(a));
  t.equal(count(a), 2, "a confirm that changes the pid");
  table.close(connectionKey(a));
  t.equal(count(a), 3, "close");
  const [b, c, d] = [conn(40001), conn(40002), conn(40003)];
  table.open(b);
  table.open(c);
  const before = count(b);
  table.open(d); // evicts b
  t.equal(count(b), before + (bucketOf(b) === bucketOf(d) ? 2 : 1), "eviction");
  t.equal(total(), table.changes, "the buckets add up to the table's changes");
});
