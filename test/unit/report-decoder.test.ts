import t, { type Test } from "tap";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { credentials } from "@grpc/grpc-js";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import * as pb from "../../plugin/generated/endpoint_reporter.ts";
import { EndpointReporterClient as PluginClient } from "../../plugin/client/endpoint-reporter-client.ts";
import { ReportDecoder } from "../../plugin/client/report-decoder.ts";
import { connectionToWire, statusToWire } from "../../plugin/servers/grpc/convert.ts";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import { closeConn, conn, grpcClient, makeBackend, STATUS, tempDir, unary } from "../helpers/server-harness.ts";

type Outcome = { value: pb.EndpointReport } | { error: true };

function outcome(decode: () => pb.EndpointReport): Outcome {
  try {
    return { value: decode() };
  } catch {
    return { error: true };
  }
}

/** The decoder must give what the generated decoder gives, or fail where it fails. */
function sameAsGenerated(t: Test, bytes: Uint8Array, what: string, decoder = new ReportDecoder()): void {
  const expected = outcome(() => pb.EndpointReport.decode(bytes));
  const actual = outcome(() => decoder.decode(bytes));
  t.strictSame(actual, expected, what);
}

const wire = (overrides: Partial<pb.Connection> = {}): pb.Connection => ({ ...connectionToWire(conn()), ...overrides });

const report: pb.EndpointReport = {
  hostId: "host-a",
  connections: [
    wire(),
    wire({ localAddress: "fd00::1", remoteAddress: "2001:db8::2", localPort: 443, remotePort: 51234, direction: pb.Direction.DIRECTION_INCOMING, comm: "nginx" }),
    wire({ localPort: 40001, closed: true }),
    wire({ localAddress: "", remoteAddress: "", localPort: 0, remotePort: 0, networkNamespace: 0, pid: 0, comm: "", direction: 0, source: 0 }),
    wire({ comm: "zürich-✓" }),
    wire({ comm: "\uFEFFbom" }),
    wire({ comm: "x".repeat(65) }),
    wire({ comm: "y".repeat(200), pid: 4_294_967_295, networkNamespace: 4_294_967_295, localPort: 65_535 }),
    // Enum values this client does not know, and a negative one (a ten-byte varint).
    wire({ direction: 7 as pb.Direction, source: 99 as pb.Source }),
    wire({ direction: -1 as pb.Direction }),
  ],
  status: statusToWire(STATUS, { clients: 3, watchers: 1 }),
  droppedClosed: 7,
  firstReport: true,
};
const encoded = pb.EndpointReport.encode(report).finish();

t.test("decodes what the generated decoder decodes, field for field", async (t) => {
  const decoded = new ReportDecoder().decode(encoded);
  t.strictSame(decoded, pb.EndpointReport.decode(encoded));
  t.equal(decoded.connections.length, report.connections.length);
  t.equal(decoded.connections[4].comm, "zürich-✓");
  t.equal(decoded.connections[7].pid, 4_294_967_295);
  sameAsGenerated(t, pb.EndpointReport.encode(pb.EndpointReport.fromPartial({})).finish(), "an empty report");
  sameAsGenerated(t, new Uint8Array(0), "no bytes at all");
  sameAsGenerated(t, Buffer.from(encoded), "from a Buffer, as grpc-js hands it over");
});

t.test("repeated strings come from the cache, and a full cache never gives a wrong string", async (t) => {
  const decoder = new ReportDecoder();
  const many = pb.EndpointReport.encode({
    ...report,
    connections: Array.from({ length: 20_000 }, (_, i) => wire({ localAddress: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, remoteAddress: "10.0.0.2", localPort: i % 65_536 })),
  }).finish();
  const first = decoder.decode(many);
  t.strictSame(first, pb.EndpointReport.decode(many), "20,000 distinct addresses: more than the cache holds");
  t.strictSame(decoder.decode(many), first, "decoded again with the cache full of them");
  t.equal(first.connections[0].remoteAddress, first.connections[19_999].remoteAddress);
});

t.test("fields a newer server adds, or sends in another order, are read as the generated decoder reads them", async (t) => {
  const entry = new BinaryWriter();
  entry.uint32((15 << 3) | 0).uint64(12_345_678_901n); // unknown varint
  entry.uint32((3 << 3) | 2).string("10.9.9.9"); // before field 1
  entry.uint32((20 << 3) | 2).string("a future string field"); // two-byte tag
  entry.uint32((11 << 3) | 5).fixed32(7); // unknown fixed32
  entry.uint32((12 << 3) | 1).fixed64(9n); // unknown fixed64
  entry.uint32((1 << 3) | 2).string("10.1.1.1");
  entry.uint32((6 << 3) | 0).uint32(1).uint32((6 << 3) | 0).uint32(2); // repeated scalar: last wins
  entry.uint32((2 << 3) | 2).string("port 2 with the wrong wire type"); // known number, other wire type: skipped
  const top = new BinaryWriter();
  top.uint32((9 << 3) | 2).string("unknown top-level field");
  top.uint32((2 << 3) | 2).bytes(entry.finish());
  top.uint32((1 << 3) | 2).string("host-1").uint32((1 << 3) | 2).string("host-2");
  const bytes = top.finish();
  sameAsGenerated(t, bytes, "unknown and reordered fields");
  const decoded = new ReportDecoder().decode(bytes);
  t.equal(decoded.connections[0].remoteAddress, "10.9.9.9");
  t.equal(decoded.connections[0].pid, 2);
  t.equal(decoded.hostId, "host-2");
});

t.test("groups, tag 0, bad wire types and oversized varints go to the generated decoder", async (t) => {
  const cases: Array<[string, number[]]> = [
    ["a group in a connection", [0x12, 4, 0x63, 0x08, 0x01, 0x64]],
    ["tag 0 in a connection", [0x12, 2, 0x00, 0x00]],
    ["wire type 7 in a connection", [0x12, 2, 0x0f, 0x00]],
    ["a top-level group", [0x0b, 0x0c]],
    ["a six-byte uint32", [0x12, 7, 0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
    ["a port over 32 bits", [0x12, 6, 0x10, 0xff, 0xff, 0xff, 0xff, 0x1f]],
    ["bool 2", [0x12, 2, 0x48, 0x02]],
    ["a string past its entry", [0x12, 3, 0x0a, 0x05, 0x41, 0x42, 0x43, 0x44, 0x45]],
  ];
  for (const [what, bytes] of cases) sameAsGenerated(t, new Uint8Array(bytes), what);
});

t.test("every truncation and every single-byte change of a real report decodes, or fails, as the generated decoder does", async (t) => {
  const small = pb.EndpointReport.encode({ ...report, connections: report.connections.slice(0, 5) }).finish();
  const differences: string[] = [];
  const decoder = new ReportDecoder();
  const check = (bytes: Uint8Array) => {
    const expected = outcome(() => pb.EndpointReport.decode(bytes));
    const actual = outcome(() => decoder.decode(bytes));
    if (!isDeepStrictEqual(actual, expected)) differences.push(Buffer.from(bytes).toString("hex"));
  };
  for (let length = 0; length < small.length; length++) check(small.subarray(0, length));
  let seed = 42;
  const random = () => ((seed = Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32;
  for (let i = 0; i < 3_000; i++) {
    const mutated = Uint8Array.from(small);
    mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256);
    check(mutated);
  }
  t.strictSame(differences.slice(0, 3), [], `no input decodes differently (${differences.length} did)`);
});

t.test("the plugin's client gets, over real gRPC, the report the generated client gets", async (t) => {
  const { table, backend } = makeBackend();
  for (let i = 0; i < 300; i++) table.open(conn({ localPort: 20_000 + i, comm: i % 2 ? "curl" : "nginx" }));
  closeConn(table, conn({ localPort: 20_000 }));
  const path = join(tempDir(t), "r.sock");
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path } });
  t.teardown(() => server.close());
  const generated = grpcClient(t, `unix://${path}`);
  const ours = new PluginClient(`unix://${path}`, credentials.createInsecure());
  t.teardown(() => ours.close());
  const [a, b] = await Promise.all([
    unary<pb.EndpointReport>((cb) => generated.report({ clientId: "" }, cb)),
    unary<pb.EndpointReport>((cb) => ours.report({ clientId: "" }, cb)),
  ]);
  t.equal(b.connections.length, 299);
  t.strictSame(b, a);
  const status = await unary<pb.TrackerStatus>((cb) => ours.getStatus({}, cb));
  t.equal(status.counters?.events, 42, "the other methods are the generated ones");
});
