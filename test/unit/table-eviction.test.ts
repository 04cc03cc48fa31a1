import t from "tap";
import { join } from "node:path";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import { reconcileTable } from "../../plugin/supervisor/reconcile.ts";
import { heuristicDirection } from "../../plugin/procfs/index.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import * as pb from "../../plugin/generated/endpoint_reporter.ts";
import { createMetrics } from "../../plugin/servers/metrics.ts";
import { closeConn, conn, eventually, grpcClient, makeBackend, tempDir, unary } from "../helpers/server-harness.ts";

const port = (p: number) => conn({ localPort: p });

t.test("an eviction is a close for every subscriber; the evicted connection's real close later is counted apart and not published again", async (t) => {
  const { table, backend } = makeBackend(3);
  const changes: Array<[string, number]> = [];
  table.subscribe((c) => changes.push([c.type, c.connection.localPort]));
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: join(tempDir(t), "e.sock") } });
  t.teardown(() => server.close());
  const client = grpcClient(t, server.address);
  const report = (id: string) => unary<pb.EndpointReport>((cb) => client.report({ clientId: id }, cb));
  await report("tool");
  const events: pb.ConnectionEvent[] = [];
  const watch = client.watch({ clientId: "w" });
  watch.on("data", (e: pb.ConnectionEvent) => events.push(e));
  watch.on("error", () => {});
  t.teardown(() => watch.cancel());
  await eventually(() => events.length === 1, 5000, "the snapshot marker");

  for (const p of [1, 2, 3, 4]) table.open(port(p)); // 4 is one over the cap: 1 leaves
  t.equal(table.evictions, 1);
  t.same(changes, [["open", 1], ["open", 2], ["open", 3], ["open", 4], ["close", 1]], "the eviction is published as a close, after the open that caused it");

  await eventually(() => events.length === 6, 5000, "live events");
  t.same(events.slice(1).map((e) => [e.type, e.connection?.localPort]), [
    [pb.EventType.EVENT_TYPE_OPEN, 1], [pb.EventType.EVENT_TYPE_OPEN, 2], [pb.EventType.EVENT_TYPE_OPEN, 3],
    [pb.EventType.EVENT_TYPE_OPEN, 4], [pb.EventType.EVENT_TYPE_CLOSE, 1],
  ], "a Watch stream sees the evicted connection closed");
  const r = await report("tool");
  t.same(r.connections.map((c) => [c.localPort, c.closed]).sort(), [[1, true], [2, false], [3, false], [4, false]], "a Report client gets it as closed, once");

  closeConn(table, port(1)); // the real close, long after
  t.equal(table.closesOfUnknown, 0, "not a close of something never known");
  t.equal(table.closesOfEvicted, 1, "counted as the close of an evicted connection");
  t.equal(changes.length, 5, "and not published a second time");
  const status = await unary<pb.TrackerStatus>((cb) => client.getStatus({}, cb));
  t.equal(status.delivery?.closesOfEvicted, 1, "the count reaches GetStatus");
  t.match(await createMetrics(backend).registry.metrics(), /^endpoint_reporter_closes_of_evicted_total 1$/m, "and the metrics");
  t.same((await report("tool")).connections.filter((c) => c.closed), [], "no second close for the Report client");

  closeConn(table, port(99));
  t.equal(table.closesOfUnknown, 1, "a close of a connection never seen still counts as unknown");
});

t.test("a reconcile re-adding an evicted connection publishes one open; its close is then an ordinary one", async (t) => {
  const { table } = makeBackend(2);
  const changes: Array<[string, number]> = [];
  table.subscribe((c) => changes.push([c.type, c.connection.localPort]));
  table.open(port(1));
  table.open(port(2));
  table.open(port(3)); // evicts 1
  table.close(connectionKey(port(3)));
  // /proc still has 1 (it was only evicted, never closed) and 2.
  const result = await reconcileTable(table, { scanned: [port(1), port(2)], openedDuringScan: new Set(), closedDuringScan: new Set(), heuristic: heuristicDirection });
  t.equal(result.added, 1);
  t.same(changes, [["open", 1], ["open", 2], ["open", 3], ["close", 1], ["close", 3], ["open", 1]], "open, evicted (closed), re-added (open): never two opens in a row");
  t.same([...table.values()].map((c) => c.localPort).sort(), [1, 2]);
  table.close(connectionKey(port(1)));
  t.equal(table.closesOfEvicted, 0, "re-added, so its close is an ordinary close");
  t.same(changes.at(-1), ["close", 1]);
});

t.test("remembered evicted keys are bounded by the table's cap", async (t) => {
  const { table } = makeBackend(2);
  for (let p = 1; p <= 10; p++) table.open(port(p)); // evicts 1..8; only the last 2 are remembered
  for (let p = 1; p <= 8; p++) table.close(connectionKey(port(p)));
  t.equal(table.closesOfEvicted, 2);
  t.equal(table.closesOfUnknown, 6);
});
