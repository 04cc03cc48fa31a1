/**
 * One client of the plugin, timing sequential calls in a process of its own (as a probe would be:
 * one client's garbage never lands in another's measurement). Prints one JSON line, a Dist.
 *
 *   node --expose-gc --import tsx scripts/bench/report-client.ts KIND --grpc-socket P --scope-socket P --samples N
 *
 * KIND: generated (the generated client, grpc-js defaults but the receive limit), wide (the same
 * with a 16 MiB HTTP/2 window), plugin (plugin/client: 16 MiB window and ReportDecoder, as the
 * CLI), raw (the Report on a raw HTTP/2 stream to its trailers: bytes only, nothing decoded),
 * status (GetStatus: the transport's floor), scope (Scope /report to the last byte, as bytes),
 * scope-text (the same, built into a UTF-8 string chunk by chunk as a JS client does).
 */
import http2 from "node:http2";
import { connect as netConnect } from "node:net";
import { parseArgs } from "node:util";
import { credentials, Metadata } from "@grpc/grpc-js";
import { EndpointReporterClient as GeneratedClient, ReportRequest } from "../../plugin/generated/endpoint_reporter.ts";
import { EndpointReporterClient as PluginClient } from "../../plugin/client/endpoint-reporter-client.ts";
import { grpcFrame, httpGet, httpGetBytes, unary } from "../../test/helpers/server-harness.ts";
import { type Dist, measure } from "./timing.ts";

export const CLIENT_KINDS = ["generated", "wide", "plugin", "raw", "status", "scope", "scope-text"] as const;
export type ClientKind = (typeof CLIENT_KINDS)[number];

const LARGE = { "grpc.max_receive_message_length": 256 * 1024 * 1024 };
const WIDE_WINDOW = { ...LARGE, "grpc-node.flow_control_window": 16 * 1024 * 1024 };

/** Report calls on one client (a deadline well past any size measured). */
function reportTimes(client: GeneratedClient, clientId: string, samples: number): Promise<Dist> {
  return measure(samples, () => unary((cb) => client.report({ clientId }, new Metadata(), { deadline: Date.now() + 60_000 }, cb)));
}

/** The Report on a raw HTTP/2 stream of one kept session: bytes in, nothing decoded. */
async function rawTimes(socketPath: string, samples: number): Promise<Dist> {
  const session = http2.connect("http://localhost", { createConnection: () => netConnect(socketPath) });
  session.on("error", () => {});
  const frame = grpcFrame(ReportRequest.encode({ clientId: "bench-raw" }).finish());
  try {
    return await measure(samples, () => new Promise<void>((resolve, reject) => {
      const req = session.request({ ":method": "POST", ":path": "/scope.endpoint.v1.EndpointReporter/Report", "content-type": "application/grpc", te: "trailers" });
      req.on("data", () => {});
      req.on("end", () => resolve());
      req.on("error", reject);
      req.end(frame);
    }));
  } finally {
    session.close();
  }
}

async function scopeTimes(socketPath: string, samples: number, asText: boolean): Promise<Dist> {
  const path = "/report?api_version=1&probe_id=bench";
  return measure(samples, async () => {
    const reply = asText ? await httpGet(socketPath, path) : await httpGetBytes(socketPath, path);
    if (reply.status !== 200) throw new Error(`/report answered ${reply.status}`);
  });
}

async function clientTimes(kind: ClientKind, grpcSocket: string, scopeSocket: string, samples: number): Promise<Dist> {
  const target = `unix://${grpcSocket}`;
  const withClient = async <C extends { close(): void }>(client: C, run: (client: C) => Promise<Dist>) => {
    try {
      return await run(client);
    } finally {
      client.close();
    }
  };
  switch (kind) {
    case "generated": return withClient(new GeneratedClient(target, credentials.createInsecure(), LARGE), (c) => reportTimes(c, "bench", samples));
    case "wide": return withClient(new GeneratedClient(target, credentials.createInsecure(), WIDE_WINDOW), (c) => reportTimes(c, "bench-wide", samples));
    case "plugin": return withClient(new PluginClient(target, credentials.createInsecure(), WIDE_WINDOW), (c) => reportTimes(c, "bench-ours", samples));
    case "status": return withClient(new GeneratedClient(target, credentials.createInsecure()), (c) => measure(samples, () => unary((cb) => c.getStatus({}, cb))));
    case "raw": return rawTimes(grpcSocket, samples);
    case "scope": return scopeTimes(scopeSocket, samples, false);
    case "scope-text": return scopeTimes(scopeSocket, samples, true);
  }
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { "grpc-socket": { type: "string" }, "scope-socket": { type: "string" }, samples: { type: "string", default: "100" } },
});
const kind = positionals[0] as ClientKind;
if (!CLIENT_KINDS.includes(kind) || values["grpc-socket"] === undefined || values["scope-socket"] === undefined) {
  process.stderr.write(`usage: report-client.ts ${CLIENT_KINDS.join("|")} --grpc-socket P --scope-socket P [--samples N]\n`);
  process.exit(2);
}
const dist = await clientTimes(kind, values["grpc-socket"], values["scope-socket"], Number(values.samples));
process.stdout.write(`${JSON.stringify(dist)}\n`);
