import t from "tap";
import * as pb from "../../plugin/generated/endpoint_reporter.ts";
import type { Connection } from "../../plugin/model/connection.ts";
import { connectionToWire, statusToWire } from "../../plugin/servers/grpc/convert.ts";
import { FastEndpointReporterService, lazyEndpointReport } from "../../plugin/servers/grpc/report-encoding.ts";
import { closeConn, conn, grpcClient, makeBackend, STATUS, tempDir, unary } from "../helpers/server-harness.ts";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import { join } from "node:path";

/** What the server hands grpc-js for a Report, copied (the serializer reuses one buffer). */
const serializeEndpointReport = (value: pb.EndpointReport) => Buffer.from(FastEndpointReporterService.report.responseSerialize(value));

const rows: Connection[] = [
  conn(),
  conn({ localAddress: "fd00::1", remoteAddress: "2001:db8::2", localPort: 443, remotePort: 51234, direction: "incoming", comm: "nginx" }),
  conn({ localPort: 40001, closed: true }),
  conn({ localAddress: "127.0.0.1", remoteAddress: "127.0.0.1", localPort: 0, remotePort: 0, netns: 0, pid: 0, comm: "", direction: "unknown", source: "procfs" }),
  // Non-ASCII (UTF-8) process names and a long one, whose entry needs a two-byte length varint.
  conn({ localPort: 40002, comm: "zürich-✓", direction: "unknown" }),
  conn({ localPort: 40003, comm: "x".repeat(200), pid: 4_000_000_000 }),
];

function plain(fields: Omit<pb.EndpointReport, "connections">, connections: readonly Connection[]): pb.EndpointReport {
  return { ...fields, connections: connections.map(connectionToWire) };
}

const variants: Array<[string, Omit<pb.EndpointReport, "connections">]> = [
  ["all fields", { hostId: "host-a", status: statusToWire(STATUS, { clients: 3, watchers: 1 }), droppedClosed: 7, firstReport: true }],
  ["defaults", { hostId: "", status: undefined, droppedClosed: 0, firstReport: false }],
];

for (const [name, fields] of variants) {
  for (const connections of [rows, [], [rows[0]]]) {
    t.test(`fast Report bytes equal the generated encoding (${name}, ${connections.length} rows)`, async (t) => {
      const expected = plain(fields, connections);
      const fast = serializeEndpointReport(lazyEndpointReport(fields, connections));
      t.same(fast, Buffer.from(pb.EndpointReport.encode(expected).finish()), "byte-identical");
      t.same(pb.EndpointReport.decode(fast), pb.EndpointReport.decode(pb.EndpointReport.encode(expected).finish()));
      t.same(pb.EndpointReport.decode(fast).connections, expected.connections);
      // Cached entries are reused on a second call and still give the same bytes.
      t.same(serializeEndpointReport(lazyEndpointReport(fields, connections)), fast);
    });
  }
}

t.test("lazy report reads as a complete EndpointReport", async (t) => {
  const fields = variants[0][1];
  const lazy = lazyEndpointReport(fields, rows);
  t.same({ ...lazy }, plain(fields, rows));
  t.same(lazy.connections, rows.map(connectionToWire));
  // The generated serializer on the lazy message and on a plain message agree.
  t.same(FastEndpointReporterService.report.responseSerialize(lazy), Buffer.from(pb.EndpointReport.encode(plain(fields, rows)).finish()));
  t.same(FastEndpointReporterService.report.responseSerialize(plain(fields, rows)), Buffer.from(pb.EndpointReport.encode(plain(fields, rows)).finish()));
  // Replacing the connections makes the serializer use the replacement.
  const replaced = lazyEndpointReport(fields, rows);
  replaced.connections = [connectionToWire(rows[1])];
  t.same(pb.EndpointReport.decode(serializeEndpointReport(replaced)).connections, [connectionToWire(rows[1])]);
  t.equal(FastEndpointReporterService.watch, pb.EndpointReporterService.watch);
  t.equal(FastEndpointReporterService.report.path, pb.EndpointReporterService.report.path);
});

t.test("a closed copy of a connection is encoded as closed", async (t) => {
  const dir = tempDir(t);
  const { table, backend } = makeBackend();
  const server = await startGrpcServer({ backend, hostId: "host-a", listen: { kind: "unix", path: join(dir, "er.sock") } });
  t.teardown(() => server.close());
  const client = grpcClient(t, server.address);
  const c = conn({ localPort: 45555 });
  table.open(c);
  await unary<pb.EndpointReport>((cb) => client.report({ clientId: "enc" }, cb));
  const open = await unary<pb.EndpointReport>((cb) => client.report({ clientId: "enc" }, cb));
  t.same(open.connections, [connectionToWire(c)]);
  closeConn(table, c);
  const after = await unary<pb.EndpointReport>((cb) => client.report({ clientId: "enc" }, cb));
  t.same(after.connections, [{ ...connectionToWire(c), closed: true }]);
  t.equal(after.hostId, "host-a");
});

t.test("cached runs: reports over a changing table stay byte-identical to the generated encoding", async (t) => {
  let seed = 12345;
  const random = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  let list: Connection[] = Array.from({ length: 3000 }, (_, i) => conn({ localPort: 1024 + i, remotePort: 80 + (i % 7), pid: i % 5 }));
  const fields = variants[0][1];
  let mismatches = 0;
  for (let round = 0; round < 30; round++) {
    const fast = serializeEndpointReport(lazyEndpointReport(fields, list));
    const expected = Buffer.from(pb.EndpointReport.encode(plain(fields, list)).finish());
    if (!fast.equals(expected)) mismatches++;
    // Mutate: removals, insertions in the middle, closed copies, appends, reorders.
    const next = list.slice();
    for (let k = 0; k < 1 + random(20); k++) next.splice(random(next.length), 1);
    for (let k = 0; k < random(20); k++) next.splice(random(next.length), 0, conn({ localPort: 20000 + random(40000), comm: "new" }));
    for (let k = 0; k < random(5); k++) {
      const at = random(next.length);
      next[at] = { ...next[at], closed: true };
    }
    if (round % 7 === 3) next.reverse();
    if (round % 5 === 4) next.push(...list.slice(0, 50));
    list = next;
  }
  t.equal(mismatches, 0);
});
