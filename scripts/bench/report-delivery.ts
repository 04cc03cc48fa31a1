/**
 * What acknowledged delivery costs a gRPC Report: the same backend served by two servers in this
 * process, one as the plugin runs it (the delivery interceptor settling every answer, closes in
 * every answer), one without the interceptor that hands closes over when the answer is built (the
 * reference: how Report worked before, same service and serializer). Calls alternate between the two, so load on the machine hits both
 * alike. Prints p50/p99 of each and the ratio.
 *
 *   node --expose-gc --import tsx scripts/bench/report-delivery.ts [--connections 10000] [--samples 300]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { credentials, Server, ServerCredentials } from "@grpc/grpc-js";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { createReportBackend } from "../../plugin/table/report-backend.ts";
import { emptyCounters } from "../../plugin/model/status.ts";
import { connectionKey, type Connection } from "../../plugin/model/connection.ts";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import { FastEndpointReporterService } from "../../plugin/servers/grpc/report-encoding.ts";
import { createEndpointReporterService } from "../../plugin/servers/grpc/service.ts";
import { EndpointReporterClient, type EndpointReport } from "../../plugin/generated/endpoint_reporter.ts";
import { distribution } from "./timing.ts";

const { values } = parseArgs({ options: { connections: { type: "string", default: "10000" }, samples: { type: "string", default: "300" } } });
const connections = Number(values.connections);
const samples = Number(values.samples);

const table = new ConnectionTable({ maxConnections: connections + 1000 });
const backend = createReportBackend(table, () => ({ source: "ebpf", sinceMs: 0, reason: "bench", counters: emptyCounters() }));
const make = (i: number): Connection => ({
  localAddress: `10.1.${(i >> 8) & 255}.${i & 255}`, localPort: 1024 + (i % 60_000), remoteAddress: "10.2.0.1", remotePort: 443,
  netns: 4026531840, pid: 1 + (i % 100), comm: "bench", direction: "outgoing", closed: false, source: "ebpf",
});
for (let i = 0; i < connections; i++) table.open(make(i));

const dir = mkdtempSync(join(tmpdir(), "er-bench-"));
const withDelivery = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: join(dir, "with.sock") } });
const reference = new Server({ "grpc.max_send_message_length": 64 * 1024 * 1024 });
// The reference hands closes over when the answer is built, as before delivery was acknowledged.
const deliveredAtBuild = { ...backend, prepareReport(id: string) {
  const prepared = backend.prepareReport(id);
  prepared.delivered();
  return prepared;
} };
reference.addService(FastEndpointReporterService, createEndpointReporterService({ backend: deliveredAtBuild, hostId: "h", maxWatchQueue: 10, watches: new Set() }));
await new Promise<void>((resolve, reject) => reference.bindAsync(`unix://${join(dir, "ref.sock")}`, ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));

const options = { "grpc.max_receive_message_length": 64 * 1024 * 1024, "grpc-node.flow_control_window": 16 * 1024 * 1024 };
const clients = {
  delivery: new EndpointReporterClient(withDelivery.address, credentials.createInsecure(), options),
  reference: new EndpointReporterClient(`unix://${join(dir, "ref.sock")}`, credentials.createInsecure(), options),
};
const call = (client: EndpointReporterClient, clientId: string) =>
  new Promise<EndpointReport>((resolve, reject) => client.report({ clientId }, (e, r) => (e ? reject(e) : resolve(r))));

// Every answer carries closes: 20 connections close between calls, so settling moves a cursor.
let churn = connections;
const closeSome = () => {
  for (let k = 0; k < 20; k++) {
    const c = make(churn++);
    table.open(c);
    table.close(connectionKey(c));
  }
};
const times = { delivery: [] as number[], reference: [] as number[] };
for (let i = 0; i < samples + 20; i++) {
  for (const kind of (i % 2 === 0 ? ["delivery", "reference"] : ["reference", "delivery"]) as Array<keyof typeof clients>) {
    closeSome();
    (globalThis as { gc?: () => void }).gc?.();
    const t0 = performance.now();
    const report = await call(clients[kind], `bench-${kind}`);
    const ms = performance.now() - t0;
    if (i >= 20) times[kind].push(ms);
    if (report.connections.length < connections) throw new Error("short report");
  }
}
const d = distribution(times.delivery);
const r = distribution(times.reference);
console.log(`Report at ${connections} connections, ${samples} calls each, alternating:`);
console.log(`  with delivery interceptor  p50 ${d.p50.toFixed(2)} ms  p99 ${d.p99.toFixed(2)} ms`);
console.log(`  reference (no interceptor) p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms`);
console.log(`  ratio p50 ${(d.p50 / r.p50).toFixed(3)}  p99 ${(d.p99 / r.p99).toFixed(3)}`);
console.log(`  undelivered answers: ${backend.delivery().grpcReportsUndelivered} (expected 0)`);
for (const c of Object.values(clients)) c.close();
await withDelivery.close();
reference.forceShutdown();
rmSync(dir, { recursive: true, force: true });
