import t from "tap";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { createReportBackend } from "../../plugin/table/report-backend.ts";
import { type Connection, connectionKey } from "../../plugin/model/connection.ts";
import { emptyCounters } from "../../plugin/model/status.ts";

const status = () => ({ source: "ebpf" as const, sinceMs: 0, reason: "test", counters: emptyCounters() });

function conn(localPort: number): Connection {
  return { localAddress: "10.0.0.1", localPort, remoteAddress: "10.0.0.2", remotePort: 80, netns: 1, pid: 1, comm: "c", direction: "outgoing", closed: false, source: "ebpf" };
}

t.test("each client sees every connection closed since its last report exactly once", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status);
  t.equal(backend.report("a").firstReport, true);
  t.equal(backend.report("b").firstReport, true);
  table.open(conn(1));
  table.open(conn(2));
  table.close(connectionKey(conn(2)));
  // Opened and closed between two reads: still seen, once, closed.
  table.open(conn(3));
  table.close(connectionKey(conn(3)));
  const a1 = backend.report("a");
  t.same(a1.connections.map((c) => [c.localPort, c.closed]).sort(), [[1, false], [2, true], [3, true]]);
  const a2 = backend.report("a");
  t.same(a2.connections.map((c) => [c.localPort, c.closed]), [[1, false]], "closed ones are not repeated");
  const b1 = backend.report("b");
  t.same(b1.connections.map((c) => [c.localPort, c.closed]).sort(), [[1, false], [2, true], [3, true]], "another client still gets them");
  t.equal(backend.clientCount(), 2);
});

t.test("anonymous report returns open connections only and registers nobody", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status);
  table.open(conn(1));
  table.open(conn(2));
  table.close(connectionKey(conn(2)));
  t.same(backend.report("").connections.map((c) => c.localPort), [1]);
  t.equal(backend.clientCount(), 0);
});

t.test("a client's closed buffer is bounded and its overflow reported to it", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status, { maxClosedPerClient: 2, clientExpiryMs: 60_000 });
  backend.report("a");
  for (let p = 1; p <= 5; p++) {
    table.open(conn(p));
    table.close(connectionKey(conn(p)));
  }
  const r = backend.report("a");
  t.equal(r.connections.length, 2);
  t.equal(r.droppedClosed, 3);
  t.equal(backend.report("a").droppedClosed, 0, "the count is reported once");
});

t.test("idle clients expire and stop accumulating", async (t) => {
  let now = 0;
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status, { maxClosedPerClient: 10, clientExpiryMs: 1000, now: () => now });
  backend.report("a");
  backend.report("b");
  now = 900;
  backend.report("b");
  now = 1500;
  backend.clients.expireIdle();
  t.equal(backend.clientCount(), 1);
  t.equal(backend.clients.expired, 1);
  t.equal(backend.report("a").firstReport, true, "an expired client starts over");
});

t.test("closes are held once for all clients, and only until every client has seen them", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status, { maxClosedPerClient: 1000, clientExpiryMs: 60_000 });
  for (let c = 0; c < 200; c++) backend.report(`c${c}`);
  for (let p = 1; p <= 100; p++) {
    table.open(conn(p));
    table.close(connectionKey(conn(p)));
  }
  t.equal(backend.clients.pendingCloses, 100, "one entry per close, not one per client");
  for (let c = 0; c < 199; c++) t.equal(backend.report(`c${c}`).connections.length, 100);
  t.equal(backend.clients.pendingCloses, 100, "kept while one client has not read them");
  t.equal(backend.report("c199").connections.length, 100);
  t.equal(backend.clients.pendingCloses, 0, "dropped once everyone has");
});

t.test("a lagging client is told how many closes it missed; the others lose nothing", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status, { maxClosedPerClient: 10, clientExpiryMs: 60_000 });
  backend.report("slow");
  backend.report("fast");
  for (let p = 1; p <= 25; p++) {
    table.open(conn(p));
    table.close(connectionKey(conn(p)));
    if (p % 5 === 0) t.equal(backend.report("fast").connections.length, 5, "the fast client keeps up");
  }
  const slow = backend.report("slow");
  t.equal(slow.connections.length, 10);
  t.equal(slow.droppedClosed, 15);
  t.same(slow.connections.map((c) => c.localPort), [16, 17, 18, 19, 20, 21, 22, 23, 24, 25], "the newest ones");
});

t.test("closes keep every field and their order while the log grows and wraps around", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100_000 });
  const backend = createReportBackend(table, status, { maxClosedPerClient: 5000, clientExpiryMs: 60_000 });
  backend.report("slow");
  backend.report("fast");
  const made: Connection[] = [];
  const directions = ["incoming", "outgoing", "unknown"] as const;
  const seenByFast: Connection[] = [];
  for (let i = 0; i < 12_000; i++) {
    const c: Connection = {
      localAddress: i % 2 ? "fd00::1" : "10.0.0.1", localPort: 1 + (i % 60_000), remoteAddress: `10.1.${i >> 8 & 255}.${i & 255}`, remotePort: 80 + (i % 7),
      netns: 4026531840 + (i % 3), pid: i, comm: `p${i % 5}`, direction: directions[i % 3], closed: false, source: i % 4 ? "ebpf" : "procfs",
    };
    table.open(c);
    table.close(connectionKey(c));
    made.push({ ...c, closed: true });
    if (i % 1000 === 999) seenByFast.push(...backend.report("fast").connections);
  }
  t.same(seenByFast, made, "the fast reader gets every close, in order, field for field");
  const slow = backend.report("slow");
  t.equal(slow.droppedClosed, 7000, "the slow reader is told what fell out of the bound");
  t.same(slow.connections, made.slice(7000), "and gets the newest 5000 intact");
});

t.test("a prepared report moves nothing until delivered; an undelivered one is offered again, counted", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status, { maxClosedPerClient: 2, clientExpiryMs: 60_000 });
  const first = backend.prepareReport("a");
  t.equal(first.firstReport, true);
  first.notDelivered();
  for (let p = 1; p <= 3; p++) {
    table.open(conn(p));
    table.close(connectionKey(conn(p)));
  }
  const lost = backend.prepareReport("a");
  t.equal(lost.firstReport, true, "still new: no answer has reached it");
  t.same(lost.connections.map((c) => c.localPort), [2, 3]);
  t.equal(lost.droppedClosed, 1);
  lost.notDelivered();
  lost.delivered(); // settled once: a late second word changes nothing
  const again = backend.prepareReport("a");
  t.same(again.connections.map((c) => c.localPort), [2, 3], "the same closes again");
  t.equal(again.droppedClosed, 1, "and the same dropped count: the client never learned it");
  again.delivered();
  again.delivered();
  const after = backend.prepareReport("a");
  t.same(after.connections, [], "delivered once, not again");
  t.equal(after.firstReport, false);
  t.equal(after.droppedClosed, 0);
  t.equal(backend.delivery().grpcReportsUndelivered, 2);
});

t.test("a delivery acknowledged after its client expired moves nothing for the new registration", async (t) => {
  let now = 0;
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status, { maxClosedPerClient: 10, clientExpiryMs: 1000, now: () => now });
  backend.report("a");
  table.open(conn(1));
  table.close(connectionKey(conn(1)));
  const stale = backend.prepareReport("a");
  now = 5000;
  backend.clients.expireIdle();
  t.equal(backend.report("a").firstReport, true, "registered anew");
  table.open(conn(2));
  table.close(connectionKey(conn(2)));
  stale.delivered();
  t.same(backend.report("a").connections.map((c) => c.localPort), [2], "the old offer's delivery did not skip the new close");
  t.equal(backend.delivery().clientsExpired, 1);
});

t.test("client ids are capped per kind, least recently asking first", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100 });
  const backend = createReportBackend(table, status, { maxClosedPerClient: 10, clientExpiryMs: 60_000, maxClientsPerKind: 2 });
  backend.report("scope:p1");
  backend.report("scope:p2");
  backend.report("grpc:a");
  backend.report("grpc:b");
  backend.report("grpc:a");
  const c = backend.prepareReport("grpc:c");
  t.equal(c.evictedClient, "grpc:b");
  t.equal(backend.clientCount(), 4);
  t.equal(backend.report("scope:p1").firstReport, false, "another kind keeps its ids");
  t.equal(backend.report("grpc:a").firstReport, false);
  t.equal(backend.delivery().clientsEvicted, 1);
});
