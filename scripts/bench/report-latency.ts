/**
 * Report latency: gRPC Report and Scope /report, p50 and p99, and response size, at 1k, 10k and
 * 100k tracked connections, each against references measured in the same run:
 *   - GetStatus: the gRPC round trip with a tiny response (transport floor);
 *   - the same Report over a raw HTTP/2 stream, bytes only: server + transport without client decoding;
 *   - EndpointReport.encode / .decode of the same report in this process: protobuf work alone (the
 *     decode is what every grpc-js client of the generated code pays on receipt), and the decode of
 *     plugin/client's ReportDecoder, which the plugin's own client (and CLI) uses;
 *   - JSON.stringify of the same Scope report (parsed once): JSON serialization alone.
 * Scope /report is timed to the last byte, as bytes (what a probe's HTTP read waits for before its
 * own JSON decode), and once more as a UTF-8 string built chunk by chunk (a JS client's extra cost).
 * Every client runs in a process of its own (report-client.ts, or the Go binary), as a probe would:
 * one client's garbage is never collected in another's measurement.
 * Report is timed as three grpc-js clients see it: the generated client with grpc-js defaults, the
 * same with a 16 MiB HTTP/2 window, and plugin/client (16 MiB window and ReportDecoder, as the CLI);
 * and as a Go probe sees it (grpc-go and protoc-gen-go, scripts/bench/go-report-client, built from
 * Debian's packages on first run; left out, with the reason, when it cannot be built).
 * And both as nghttp2's h2load sees them (Debian's nghttp2-client, installed on first run): a client
 * written in C that decodes nothing and collects no garbage, so its figures are the plugin and the
 * transport alone, the floor under every other client's (scripts/bench/h2load.ts).
 * The machine itself is measured too: page-touch's cost of first touching a fresh 4 KiB page, with
 * what that costs for one answer's bytes (each side receives or copies them into fresh memory).
 * Goals: p99 < 20 ms at 10k, < 200 ms at 100k.
 *
 *   node --expose-gc --import tsx scripts/bench/report-latency.ts [--sizes 1000,10000,100000] [--samples 300,300,30] [--trace-gc]
 *     [--glibc-tunables T]   (the plugin's GLIBC_TUNABLES instead of scripts/start.sh's; "" for glibc's defaults)
 *
 * The connections are real: established loopback connections held by conn-holder (scripts/bench/
 * conn-holder.c, grown by holders.ts), both ends in the holder, so N tracked = N/2 held. The plugin
 * is the real process (plugin/main.ts under Node) with --source procfs, so one /proc scan at start
 * fills the table; the periodic scan is pushed out of the measurement (--proc-poll-interval-ms
 * 600000) so that the figures are the Report path alone. Needs root; builds conn-holder on first run.
 */
import { execFile, execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import type { ServiceError } from "@grpc/grpc-js";
import { EndpointReport, type EndpointReporterClient, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { ReportDecoder } from "../../plugin/client/report-decoder.ts";
import { startPlugin, type PluginProcess } from "../../test/helpers/plugin-child.ts";
import { httpGetBytes, unary } from "../../test/helpers/server-harness.ts";
import { ConnectionHolders, ensureBenchHelpers, heldTablePluginArgs } from "./holders.ts";
import { ensureGoReportClient, goReportTimes, type GoReportTimes } from "./go-report-client.ts";
import { ensureH2load, h2loadTimes, reportTarget } from "./h2load.ts";
import type { ClientKind } from "./report-client.ts";
import { type Dist, measureSync } from "./timing.ts";

const here = dirname(fileURLToPath(import.meta.url));
const execFileAsync = promisify(execFile);
const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "1000,10000,100000" },
    samples: { type: "string", default: "300,300,30" },
    "trace-gc": { type: "boolean", default: false },
    /** The plugin's GLIBC_TUNABLES instead of scripts/start.sh's ("" for glibc's defaults). */
    "glibc-tunables": { type: "string" },
  },
});
const sizes = values.sizes.split(",").map(Number);
const sampleCounts = values.samples.split(",").map(Number);
/** With --trace-gc: the plugin's collections, counted from V8's trace on its stdout. */
const gc = { scavenge: 0, markCompact: 0, markCompactMs: 0 };
function countGc(line: string): void {
  if (line.includes("Scavenge")) gc.scavenge++;
  const full = /Mark-Compact.*?, ([\d.]+) \/ [\d.]+ ms/.exec(line);
  if (full !== null) {
    gc.markCompact++;
    gc.markCompactMs += Number(full[1]);
  }
}
const gcSince = (before: typeof gc) => `scavenges ${gc.scavenge - before.scavenge}, mark-compacts ${gc.markCompact - before.markCompact} (${(gc.markCompactMs - before.markCompactMs).toFixed(0)} ms)`;

const GOALS_P99_MS: Record<number, number> = { 10_000: 20, 100_000: 200 };

/** One client's timings from its own process (report-client.ts); async, so the plugin's --trace-gc lines keep flowing. */
async function clientTimes(kind: ClientKind, p: PluginProcess, samples: number): Promise<Dist> {
  const { stdout } = await execFileAsync(process.execPath, [
    "--expose-gc", "--import", "tsx", join(here, "report-client.ts"), kind,
    "--grpc-socket", p.grpcSocket, "--scope-socket", p.scopeSocket, "--samples", String(samples),
  ], { maxBuffer: 1 << 20, timeout: 900_000 });
  return JSON.parse(stdout) as Dist;
}

const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(bytes >= 1e6 ? 1 : 3)} MB`;

interface Row {
  tracked: number;
  report: Dist; reportBytes: number;
  wideWindow: Dist;
  pluginClient: Dist;
  go: GoReportTimes | undefined;
  h2load: Dist | undefined;
  h2loadScope: Dist | undefined;
  raw: Dist;
  status: Dist;
  encode: Dist;
  decode: Dist;
  fastDecode: Dist;
  scope: Dist; scopeText: Dist; scopeBytes: number;
  stringify: Dist;
  defaultClient: string;
}

async function benchSize(p: PluginProcess, samples: number, goClient: string | Error, h2load: string | Error): Promise<Row> {
  const client: EndpointReporterClient = p.client({ "grpc.max_receive_message_length": 256 * 1024 * 1024 });
  try {
    const status = await unary<TrackerStatus>((cb) => client.getStatus({}, cb));
    const tracked = Number(status.counters?.connectionsTracked ?? 0);
    // One report, untimed, for its size and for the in-process references below.
    const last = await unary<EndpointReport>((cb) => client.report({ clientId: "bench-reference" }, cb));
    const reportBytes = EndpointReport.encode(last).finish().length;
    if (last.connections.length !== tracked) throw new Error(`a Report held ${last.connections.length} connections, the table ${tracked}`);
    const gcBefore = { ...gc };
    const report = await clientTimes("generated", p, samples);
    if (values["trace-gc"]) process.stderr.write(`${tracked}: plugin GC during ${samples} Reports: ${gcSince(gcBefore)}\n`);
    const wideWindow = await clientTimes("wide", p, samples);
    const pluginClient = await clientTimes("plugin", p, samples);
    const go = typeof goClient === "string" ? goReportTimes(goClient, p.grpcSocket, samples, "bench-go") : undefined;
    if (go !== undefined && go.connections !== tracked) throw new Error(`the Go client got ${go.connections} connections, the table holds ${tracked}`);
    const raw = await clientTimes("raw", p, samples);
    const statusDist = await clientTimes("status", p, Math.max(samples, 100));
    const encode = measureSync(Math.min(samples, 50), () => EndpointReport.encode(last).finish());
    const encoded = EndpointReport.encode(last).finish();
    const decode = measureSync(Math.min(samples, 50), () => EndpointReport.decode(encoded));
    const decoder = new ReportDecoder();
    const fastDecode = measureSync(Math.min(samples, 50), () => decoder.decode(encoded));
    const scope = await clientTimes("scope", p, samples);
    const scopeText = await clientTimes("scope-text", p, samples);
    const scopeReply = await httpGetBytes(p.scopeSocket, "/report?api_version=1&probe_id=bench-reference");
    const h2 = typeof h2load === "string" ? h2loadTimes(h2load, reportTarget(p.grpcSocket, "bench-h2load", reportBytes), samples) : undefined;
    const h2Scope = typeof h2load === "string"
      ? h2loadTimes(h2load, { socket: p.scopeSocket, url: "http://localhost/report?api_version=1&probe_id=bench-h2load", h1: true, expectBytes: scopeReply.body.length }, samples)
      : undefined;
    const parsed = JSON.parse(scopeReply.body.toString("utf8"));
    const stringify = measureSync(Math.min(samples, 50), () => JSON.stringify(parsed));
    // A client with grpc-js defaults (4 MiB receive limit), as the CLI builds it.
    const plain = p.client();
    const defaultClient = await unary<EndpointReport>((cb) => plain.report({ clientId: "" }, cb)).then(
      () => "ok",
      (e: ServiceError) => `fails: ${e.code} ${e.details.slice(0, 70)}`,
    );
    plain.close();
    return { tracked, report, reportBytes, wideWindow, pluginClient, go, h2load: h2, h2loadScope: h2Scope, raw, status: statusDist, encode, decode, fastDecode, scope, scopeText, scopeBytes: scopeReply.body.length, stringify, defaultClient };
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  const helpers = ensureBenchHelpers();
  const holders = new ConnectionHolders(join(helpers, "conn-holder"));
  const goClient = ensureGoReportClient();
  if (goClient instanceof Error) process.stderr.write(`Go client left out: ${goClient.message}\n`);
  const h2load = ensureH2load();
  if (h2load instanceof Error) process.stderr.write(`h2load left out: ${h2load.message}\n`);
  const usPerPage = Number(/us_per_page ([\d.]+)/.exec(execFileSync(join(helpers, "page-touch"), { encoding: "utf8" }))?.[1]);
  process.on("SIGINT", () => void holders.stop().finally(() => process.exit(130)));
  const rows: Row[] = [];
  try {
    for (const [i, size] of sizes.entries()) {
      const t0 = performance.now();
      await holders.grow(Math.ceil(size / 2));
      const grownMs = performance.now() - t0;
      const plugin = await startPlugin({
        runtime: "node",
        args: heldTablePluginArgs(size),
        readyTimeoutMs: 180_000,
        ...(values["glibc-tunables"] !== undefined ? { env: { GLIBC_TUNABLES: values["glibc-tunables"] } } : {}),
        ...(values["trace-gc"] ? { nodeArgs: ["--trace-gc"], onStdout: countGc } : {}),
      });
      try {
        process.stderr.write(`${size}: ${Math.ceil(size / 2)} held in ${(grownMs / 1000).toFixed(1)} s, plugin ready (pid ${plugin.pid}, rss ${Math.round(plugin.rssKiB() / 1024)} MiB)\n`);
        rows.push(await benchSize(plugin, sampleCounts[i] ?? sampleCounts.at(-1)!, goClient, h2load));
        process.stderr.write(`${size}: plugin rss after the clients ${Math.round(plugin.rssKiB() / 1024)} MiB\n`);
      } finally {
        await plugin.stop("SIGTERM", 10_000);
        await plugin.cleanup();
      }
    }
  } finally {
    await holders.stop();
  }

  console.log("\nReport latency (ms), plugin under Node, --source procfs; each client in its own process, sequential calls on one Unix-socket channel");
  console.log("tracked   | gRPC Report p50 / p99 (size)      | 16 MiB window p50 / p99 | plugin/client p50 / p99 | Go client p50 / p99 | h2load p50 / p99 | raw HTTP/2 p50 / p99 | GetStatus p50 / p99 | encode p50 | decode p50 generated / plugin | Scope /report p50 / p99 (size)   | as text p50 / p99 | h2load p50 / p99 | JSON.stringify p50");
  for (const r of rows) {
    console.log(
      `${String(r.tracked).padEnd(9)} | ${fmt(r.report.p50).padStart(6)} / ${fmt(r.report.p99).padStart(6)} (${mb(r.reportBytes).padStart(8)}) n=${String(r.report.n).padEnd(3)} ` +
      `| ${fmt(r.wideWindow.p50).padStart(8)} / ${fmt(r.wideWindow.p99).padStart(6)}      ` +
      `| ${fmt(r.pluginClient.p50).padStart(8)} / ${fmt(r.pluginClient.p99).padStart(6)}      ` +
      `| ${r.go ? `${fmt(r.go.p50).padStart(8)} / ${fmt(r.go.p99).padStart(6)}  ` : "   (not built)      "}` +
      `| ${r.h2load ? `${fmt(r.h2load.p50).padStart(6)} / ${fmt(r.h2load.p99).padStart(6)}  ` : "  (not installed)  "}` +
      `| ${fmt(r.raw.p50).padStart(6)} / ${fmt(r.raw.p99).padStart(6)}      | ${fmt(r.status.p50).padStart(8)} / ${fmt(r.status.p99).padStart(6)}  | ${fmt(r.encode.p50).padStart(7)}    | ${fmt(r.decode.p50).padStart(9)} / ${fmt(r.fastDecode.p50).padStart(6)}        ` +
      `| ${fmt(r.scope.p50).padStart(6)} / ${fmt(r.scope.p99).padStart(6)} (${mb(r.scopeBytes).padStart(8)}) n=${String(r.scope.n).padEnd(3)} | ${fmt(r.scopeText.p50).padStart(6)} / ${fmt(r.scopeText.p99).padStart(6)} | ${r.h2loadScope ? `${fmt(r.h2loadScope.p50).padStart(6)} / ${fmt(r.h2loadScope.p99).padStart(6)}  ` : "  (not installed)  "}| ${fmt(r.stringify.p50).padStart(7)}`,
    );
  }
  console.log("\nratios (same run): Report p50 / GetStatus p50 (transport floor), Report p50 / encode and / decode p50 (protobuf work alone), raw p50 / Report p50 (share without client decoding), Scope p50 / JSON.stringify p50");
  for (const r of rows) {
    console.log(`${String(r.tracked).padEnd(9)} | x${(r.report.p50 / r.status.p50).toFixed(1)} GetStatus | x${(r.report.p50 / r.encode.p50).toFixed(1)} encode | x${(r.report.p50 / r.decode.p50).toFixed(1)} decode | ReportDecoder x${(r.decode.p50 / r.fastDecode.p50).toFixed(1)} faster | raw ${(100 * r.raw.p50 / r.report.p50).toFixed(0)}% of Report | Scope x${(r.scope.p50 / r.stringify.p50).toFixed(2)} JSON.stringify | default-options client: ${r.defaultClient}`);
  }
  console.log(`\nthis machine (page-touch, same run): ${usPerPage.toFixed(1)} µs to first touch a fresh 4 KiB page; one answer's bytes in fresh memory:`);
  for (const r of rows) console.log(`${String(r.tracked).padEnd(9)} | ${fmt((r.reportBytes / 4096) * usPerPage / 1000)} ms per side (${mb(r.reportBytes)})`);
  console.log("\ngoals (p99; Scope's own deadline for a plugin is 500 ms):");
  for (const [i, r] of rows.entries()) {
    const goal = GOALS_P99_MS[sizes[i]];
    if (goal !== undefined) {
      const verdict = (d: Dist | undefined, what: string) => (d === undefined ? "" : `${what} p99 ${fmt(d.p99)} ms: ${d.p99 < goal ? "met" : "MISSED"}; `);
      console.log(`  ${sizes[i]} (tracked ${r.tracked}), goal p99 < ${goal} ms. The plugin (h2load): ${verdict(r.h2load, "Report")}${verdict(r.h2loadScope, "Scope /report")}`);
      console.log(`    as clients see it: ${verdict(r.report, "generated grpc-js")}${verdict(r.wideWindow, "16 MiB window")}${verdict(r.pluginClient, "plugin/client")}` +
        `${verdict(r.go, "Go client")}${verdict(r.raw, "Node raw HTTP/2 (no decoding)")}${verdict(r.scope, "Node HTTP Scope /report")}`);
    }
  }
}

await main();
