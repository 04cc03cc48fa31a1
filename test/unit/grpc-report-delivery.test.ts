import t, { type Test } from "tap";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { credentials, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { createReportBackend } from "../../plugin/table/report-backend.ts";
import { EndpointReporterClient, type EndpointReport, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { createLogger } from "../../plugin/log.ts";
import { createMetrics } from "../../plugin/servers/metrics.ts";
import { closeConn, conn, grpcClient, STATUS, tempDir, unary } from "../helpers/server-harness.ts";

const STALLING_CLIENT = join(fileURLToPath(new URL(".", import.meta.url)), "../helpers/stalling-report-client.ts");

/** A server over a table big enough that one answer (~1 MB) is many HTTP/2 windows (64 KiB). */
async function serve(t: Test, options: { open?: number; maxClientsPerKind?: number } = {}) {
  const table = new ConnectionTable({ maxConnections: 100_000 });
  const backend = createReportBackend(table, () => STATUS, { maxClosedPerClient: 65_536, clientExpiryMs: 120_000, maxClientsPerKind: options.maxClientsPerKind });
  for (let i = 0; i < (options.open ?? 20_000); i++) table.open(conn({ localAddress: `10.1.${i >> 8}.${i & 255}`, localPort: 30_000 + (i % 30_000) }));
  const logs: string[] = [];
  const log = createLogger("info", {}, (line) => void logs.push(line));
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: join(tempDir(t), "er.sock") }, log });
  t.teardown(() => server.close());
  const client = grpcClient(t, server.address);
  const report = (clientId: string, c: EndpointReporterClient = client) => unary<EndpointReport>((cb) => c.report({ clientId }, cb));
  const status = () => unary<TrackerStatus>((cb) => client.getStatus({}, cb));
  /** 100 short-lived connections, closed: what every registered client must get once. */
  const closeHundred = (firstPort: number) => {
    for (let p = firstPort; p < firstPort + 100; p++) {
      const c = conn({ localAddress: "10.9.9.9", localPort: p });
      table.open(c);
      closeConn(table, c);
    }
  };
  return { table, backend, server, client, report, status, closeHundred, logs };
}

const closedPorts = (r: EndpointReport) => r.connections.filter((c) => c.closed).map((c) => c.localPort).sort((a, b) => a - b);
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

function stallingCall(address: string, clientId: string, mode: "cancel" | "deadline", deadlineMs: number, stallMs: number): Promise<{ code: number; closed: number }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ["--import", "tsx", STALLING_CLIENT, address, clientId, mode, String(deadlineMs), String(stallMs)], { timeout: 30_000 }, (error, stdout) => {
      if (error) reject(error);
      else resolve(JSON.parse(stdout.trim()));
    });
  });
}

t.test("an answer refused by the client's receive limit leaves every close for its next Report", async (t) => {
  const s = await serve(t);
  t.equal((await s.report("tool")).firstReport, true);
  s.closeHundred(1000);
  const limited = new EndpointReporterClient(s.server.address, credentials.createInsecure(), { "grpc.max_receive_message_length": 64 * 1024 });
  t.teardown(() => limited.close());
  const refused = await s.report("tool", limited).then(() => undefined, (error: ServiceError) => error);
  t.equal(refused?.code, GrpcStatus.RESOURCE_EXHAUSTED, "the client refused the ~1 MB answer");

  const next = await s.report("tool");
  t.same(closedPorts(next), range(1000, 100), "the next Report under the same client_id gets all 100 closes");
  t.equal(next.droppedClosed, 0, "none counted as dropped");
  t.same(closedPorts(await s.report("tool")), [], "and once delivered, not again");
  t.equal((await s.status()).delivery?.grpcReportsUndelivered, 1, "the undelivered answer is counted in GetStatus");
  t.match(await createMetrics(s.backend).registry.metrics(), /^endpoint_reporter_grpc_reports_undelivered_total 1$/m, "and in the metrics");
});

t.test("a client cancelling mid-answer, or its deadline passing mid-answer, gets the closes on its next call", async (t) => {
  const s = await serve(t);
  const address = s.server.address;
  // Registered by a first answer that never arrives: the client is still new on its next call.
  const firstLost = await stallingCall(address, "stalled", "cancel", 30_000, 300);
  t.equal(firstLost.code, GrpcStatus.CANCELLED);
  s.closeHundred(2000);

  const cancelled = await stallingCall(address, "stalled", "cancel", 30_000, 300);
  t.equal(cancelled.code, GrpcStatus.CANCELLED, "cancelled while the answer was being written");
  const late = await stallingCall(address, "stalled", "deadline", 300, 1_000);
  t.equal(late.code, GrpcStatus.DEADLINE_EXCEEDED, "the deadline passed while the answer was being written");

  const next = await s.report("stalled");
  t.equal(next.firstReport, true, "no answer had reached it: still its first report");
  t.same(closedPorts(next), range(2000, 100), "every close is still there");
  t.equal(next.droppedClosed, 0);
  t.same(closedPorts(await s.report("stalled")), [], "exactly once after a delivered answer");
  t.equal((await s.status()).delivery?.grpcReportsUndelivered, 3);
});

t.test("answers that arrive deliver exactly once, per client_id, under churn between calls", async (t) => {
  const s = await serve(t, { open: 100 });
  await s.report("a");
  await s.report("b");
  const seenA: number[] = [];
  for (let round = 0; round < 5; round++) {
    s.closeHundred(10_000 + round * 100);
    seenA.push(...closedPorts(await s.report("a")));
  }
  t.same(seenA, range(10_000, 500), "a saw every close once, in five answers");
  t.same(closedPorts(await s.report("b")), range(10_000, 500), "b, asking once, saw all of them too");
  t.same(closedPorts(await s.report("a")), []);
  t.equal((await s.status()).delivery?.grpcReportsUndelivered, 0);
});

t.test("gRPC client ids are capped: the least recently asking one is forgotten, counted and logged; Scope probes are untouched", async (t) => {
  const s = await serve(t, { open: 10, maxClientsPerKind: 3 });
  s.backend.report("scope:probe-1");
  for (const id of ["one", "two", "three"]) await s.report(id);
  await s.report("one"); // now "two" is the least recently asking
  s.closeHundred(3000);
  t.equal((await s.report("four")).firstReport, true);
  const status = await s.status();
  t.equal(status.clients, 4, "three gRPC ids and the Scope probe");
  t.equal(status.delivery?.clientsEvicted, 1);
  t.match(s.logs.join(""), /ERR_TOO_MANY_CLIENTS.*"evicted":"two"/, "the eviction is logged with the id");
  t.match(await createMetrics(s.backend).registry.metrics(), /^endpoint_reporter_clients_evicted_total 1$/m, "and counted in the metrics");
  t.same(closedPorts(await s.report("one")), range(3000, 100), "a recent client kept its closes");
  t.same(closedPorts(await s.report("three")), range(3000, 100));
  const back = await s.report("two");
  t.equal(back.firstReport, true, "the forgotten one is told it starts over");
  t.same(closedPorts(back), []);
  t.equal(s.backend.report("scope:probe-1").connections.filter((c) => c.closed).length, 100, "the Scope probe, another kind, kept its place and closes");
});

t.test("an answer over the server's own send limit delivers nothing", async (t) => {
  const table = new ConnectionTable({ maxConnections: 1000 });
  const backend = createReportBackend(table, () => STATUS);
  for (let i = 0; i < 200; i++) table.open(conn({ localPort: 20_000 + i }));
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: join(tempDir(t), "s.sock") }, limits: { maxSendMessageBytes: 4096 } });
  t.teardown(() => server.close());
  const client = grpcClient(t, server.address);
  const report = () => unary<EndpointReport>((cb) => client.report({ clientId: "big" }, cb));
  await t.rejects(report(), { code: GrpcStatus.RESOURCE_EXHAUSTED }, "registered, but the answer is too big to send");
  const gone = conn({ localPort: 20_000 });
  closeConn(table, gone);
  await t.rejects(report(), { code: GrpcStatus.RESOURCE_EXHAUSTED });
  t.equal(backend.delivery().grpcReportsUndelivered, 2);
  const inProcess = backend.report("grpc:big");
  t.equal(inProcess.firstReport, true, "no answer ever reached it");
  t.same(inProcess.connections.filter((c) => c.closed).map((c) => c.localPort), [20_000], "the close is still held for it");
});
