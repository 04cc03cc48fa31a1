/**
 * Deno soak: the plugin under Deno against hundreds of short-lived Node gRPC clients, counting
 * plugin crashes (denoland/deno#36788: Deno's nghttp2 can abort while processing a GOAWAY, exit
 * 134 "Assertion `stream->closed_next == NULL' failed", or 139 with nothing printed).
 *
 *   node --import tsx scripts/deno-soak.ts [--cycles 500] [--runtime deno|node] [--variants a,b] [--max-seconds 240]
 *                                          [--idle-sessions 4 --idle-ms 60000 --idle-end close|sigterm] [--shutdowns 40]
 *
 * One cycle is one of (in a fixed rotation, so runs are comparable):
 *   report-close    new grpc-js client, Report, client.close()  (graceful: the client sends GOAWAY)
 *   reports-close   new grpc-js client, 13 Reports on one session, close()  (the upstream repro's pattern, without its idle)
 *   watch-cancel    new grpc-js client, Watch, cancel after the snapshot, close()
 *   raw-destroy     raw node:http2 session, Report, then the socket destroyed (no GOAWAY at all)
 *   raw-midcall     raw node:http2 session, Report sent, socket destroyed before the answer
 * Besides the cycles, `--idle-sessions` clients each make 1, 13, 50 or 113 calls and sit idle
 * `--idle-ms`: the upstream issue's trigger (a GOAWAY on a long-idle session). Then either the
 * clients close (`--idle-end close`: the client sends GOAWAY) or the plugin is sent SIGTERM while
 * they are still connected (`--idle-end sigterm`: the Deno server's tryShutdown sends GOAWAY, the
 * direction in which nghttp2 walks the peer's streams in find_stream_on_goaway_func).
 * `--inject-abort-at 100,300` SIGABRTs the plugin at those cycles: a self-test that crashes are
 * counted, signed and survived (expect exactly that many crashes, signal SIGABRT).
 * `--shutdowns N` then starts the plugin N more times and sends SIGTERM while 20 clients keep new
 * Report streams arriving: the server's GOAWAY races streams it has not processed yet, the only
 * case in which nghttp2 walks the peer's streams with ids above last_stream_id (after sending GOAWAY;
 * on receiving one, a server has no streams of its own to walk). Exit must be 0 within 2 s.
 *
 * The plugin is restarted whenever it dies; the summary gives crashes per cycles, the exit
 * code/signal and the stderr lines that identify the failure (the cycle named is the one after
 * which the death was noticed), per variant. VARIANTS holds only `baseline` (plugin/main.ts as
 * shipped): none of these clients has set the abort off. One that does (nghttp2's h2load, many
 * large Reports on one connection, then GOAWAY) is in scripts/deno-h2load-abort.ts. A candidate
 * workaround goes here as plugin flags/env or client options and is compared in one run with
 * `--variants baseline,<name>`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as netConnect } from "node:net";
import { parseArgs } from "node:util";
import { Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { type ConnectionEvent, type EndpointReport, EndpointReport as EndpointReportCodec, type EndpointReporterClient, EventType, ReportRequest } from "../plugin/generated/endpoint_reporter.ts";
import { type PluginProcess, type Runtime, startPlugin } from "../test/helpers/plugin-child.ts";
import { grpcFrame } from "../test/helpers/server-harness.ts";

const { values } = parseArgs({
  options: {
    cycles: { type: "string", default: "500" },
    runtime: { type: "string", default: "deno" },
    variants: { type: "string", default: "baseline" },
    "max-seconds": { type: "string", default: "240" },
    "idle-sessions": { type: "string", default: "0" },
    "idle-ms": { type: "string", default: "60000" },
    "idle-end": { type: "string", default: "close" },
    shutdowns: { type: "string", default: "0" },
    /** Self-test of the crash accounting: SIGABRT the plugin at these cycles (as an nghttp2 assertion would). */
    "inject-abort-at": { type: "string", default: "" },
    "call-timeout-ms": { type: "string", default: "5000" },
    verbose: { type: "boolean", default: false },
  },
});
const cycles = Number(values.cycles);
const runtime = values.runtime as Runtime;
const maxMs = Number(values["max-seconds"]) * 1000;
const idleSessions = Number(values["idle-sessions"]);
const idleMs = Number(values["idle-ms"]);
const idleEnd = values["idle-end"] as "close" | "sigterm";
if (idleEnd !== "close" && idleEnd !== "sigterm") throw new Error("--idle-end is close or sigterm");
const IDLE_CALLS = [1, 13, 50, 113];
const injectAt = new Set(values["inject-abort-at"].split(",").filter(Boolean).map(Number));
const callTimeoutMs = Number(values["call-timeout-ms"]);

interface Variant {
  /** Extra plugin flags / env; workarounds are expressed through what the plugin already offers. */
  args?: string[];
  env?: Record<string, string>;
  /** Client-side behaviour change (only meaningful when we control the clients). */
  clientOptions?: Record<string, unknown>;
  describe: string;
}

const VARIANTS: Record<string, Variant> = {
  baseline: { describe: "plugin/main.ts as shipped" },
};

const KINDS = ["report-close", "report-close", "reports-close", "watch-cancel", "report-close", "raw-destroy", "report-close", "raw-midcall"] as const;
type Kind = (typeof KINDS)[number];

interface Crash {
  cycle: number;
  kind: Kind | "idle-session";
  code: number | null;
  signal: string | null;
  signature: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function withTimeout<T>(what: string, p: Promise<T>, ms = callTimeoutMs): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no answer after ${ms} ms`)), ms);
    p.then((v) => { clearTimeout(timer); resolve(v); }, (e) => { clearTimeout(timer); reject(e); });
  });
}

function report(client: EndpointReporterClient, clientId: string): Promise<EndpointReport> {
  return withTimeout("Report", new Promise((resolve, reject) => {
    client.report({ clientId }, new Metadata(), { deadline: Date.now() + callTimeoutMs }, (error, value) => (error ? reject(error) : resolve(value)));
  }));
}

/** A Report over a raw HTTP/2 session; `abortEarly` destroys the socket right after the request is written. */
async function rawReport(socketPath: string, clientId: string, abortEarly: boolean): Promise<void> {
  const socket = netConnect(socketPath);
  socket.on("error", () => {});
  const session = http2.connect("http://localhost", { createConnection: () => socket });
  session.on("error", () => {});
  try {
    const req = session.request({ ":method": "POST", ":path": "/scope.endpoint.v1.EndpointReporter/Report", "content-type": "application/grpc", te: "trailers" });
    req.on("error", () => {});
    req.end(grpcFrame(ReportRequest.encode({ clientId }).finish()));
    if (abortEarly) {
      await withTimeout("raw Report send", new Promise<void>((resolve, reject) => {
        req.once("ready", () => resolve());
        req.once("error", reject);
        session.once("close", () => reject(new Error("raw session closed before the stream was sent")));
      }));
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (d: Buffer) => chunks.push(d));
    await withTimeout("raw Report", new Promise<void>((resolve, reject) => {
      req.on("end", () => resolve());
      req.on("error", reject);
      req.on("close", () => resolve());
    }));
    const body = Buffer.concat(chunks);
    if (body.length < 5) throw new Error("raw Report: no message");
    EndpointReportCodec.decode(body.subarray(5, 5 + body.readUInt32BE(1)));
  } finally {
    // Abrupt: no GOAWAY, no RST_STREAM, the peer just sees the connection drop.
    socket.destroy();
    session.destroy();
  }
}

async function watchThenCancel(client: EndpointReporterClient, clientId: string): Promise<void> {
  const call = client.watch({ clientId });
  await withTimeout("Watch snapshot", new Promise<void>((resolve, reject) => {
    call.on("data", (e: ConnectionEvent) => e.type === EventType.EVENT_TYPE_SNAPSHOT_COMPLETE && resolve());
    call.on("error", (e: ServiceError) => (e.code === GrpcStatus.CANCELLED ? undefined : reject(e)));
  }));
  call.cancel();
}

async function runCycle(p: PluginProcess, variant: Variant, cycle: number, kind: Kind): Promise<void> {
  const id = `soak-${cycle}`;
  if (kind === "raw-destroy" || kind === "raw-midcall") return rawReport(p.grpcSocket, id, kind === "raw-midcall");
  const client = p.client(variant.clientOptions as never);
  try {
    if (kind === "report-close") await report(client, id);
    else if (kind === "reports-close") for (let i = 0; i < 13; i++) await report(client, id);
    else await watchThenCancel(client, id);
  } finally {
    client.close();
  }
}

/** Upstream's trigger: a session that made some calls, then sat idle; closed by us or by the plugin's shutdown. */
async function idleSession(p: PluginProcess, n: number, idleFor: number, closeAfter: Promise<void>): Promise<void> {
  const client = p.client({ "grpc.use_local_subchannel_pool": 1 } as never);
  try {
    for (let i = 0; i < IDLE_CALLS[n % IDLE_CALLS.length]; i++) await report(client, `idle-${n}`);
    await sleep(idleFor);
    await closeAfter;
  } finally {
    client.close();
  }
}

function signatureOf(logs: readonly string[]): string[] {
  const interesting = logs.filter((l) => !l.startsWith("{") || /"level":"(error|warn)"/.test(l));
  return interesting.slice(-6).map((l) => l.slice(0, 240));
}

interface ShutdownResult {
  runs: number;
  clean: number;
  crashes: Crash[];
  slow: number;
  maxMs: number;
  callsInFlight: number;
}

/** SIGTERM while new streams keep arriving from 20 clients. */
async function shutdownRaces(variant: Variant, runs: number, deadline: number): Promise<ShutdownResult> {
  const result: ShutdownResult = { runs: 0, clean: 0, crashes: [], slow: 0, maxMs: 0, callsInFlight: 0 };
  for (let run = 0; run < runs && Date.now() < deadline; run++) {
    const plugin = await startPlugin({ runtime, args: variant.args, env: variant.env, readyTimeoutMs: 90_000 });
    const clients = Array.from({ length: 20 }, () => plugin.client({ "grpc.use_local_subchannel_pool": 1, "grpc.max_reconnect_backoff_ms": 200 } as never));
    let stop = false;
    const loops = clients.map(async (client, i) => {
      while (!stop) {
        result.callsInFlight++;
        await report(client, `race-${i}`).catch(() => undefined);
      }
    });
    await sleep(150 + (run % 5) * 40);
    const stopped = await plugin.stop("SIGTERM", 5000);
    stop = true;
    clients.forEach((c) => c.close());
    await Promise.all(loops);
    result.runs++;
    result.maxMs = Math.max(result.maxMs, stopped.elapsedMs);
    if (stopped.code === 0) result.clean++;
    else {
      result.crashes.push({ cycle: run, kind: "idle-session", code: stopped.code, signal: stopped.signal, signature: signatureOf(plugin.logs) });
      console.log(`  shutdown ${run}: code=${stopped.code} signal=${stopped.signal}; ${signatureOf(plugin.logs).slice(-2).join(" | ")}`);
    }
    if (stopped.elapsedMs >= 2000) result.slow++;
    await plugin.cleanup();
  }
  return result;
}

interface VariantResult {
  shutdown?: ShutdownResult;
  variant: string;
  runtime: Runtime;
  cyclesRun: number;
  crashes: Crash[];
  failedCalls: number;
  failures: Record<string, number>;
  seconds: number;
  restarts: number;
  idleSessionsClosed: number;
}

async function soak(name: string, variant: Variant, deadline: number): Promise<VariantResult> {
  // One directory for the plugin and its restarts, removed at the end whatever happened.
  const dir = mkdtempSync(join(tmpdir(), "erp-soak-"));
  try {
    return await soakIn(dir, name, variant, deadline);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function soakIn(dir: string, name: string, variant: Variant, deadline: number): Promise<VariantResult> {
  const started = performance.now();
  const crashes: Crash[] = [];
  const failures: Record<string, number> = {};
  let failedCalls = 0;
  let restarts = 0;
  let idleClosed = 0;
  let plugin = await startPlugin({ runtime, args: variant.args, env: variant.env, dir, readyTimeoutMs: 90_000 });
  let lastKind: Kind | "idle-session" = "report-close";
  let cyclesRun = 0;

  const recordDeath = async (cycle: number, kind: Kind | "idle-session") => {
    const exit = await plugin.exited;
    crashes.push({ cycle, kind, code: exit.code, signal: exit.signal, signature: signatureOf(plugin.logs) });
    console.log(`  cycle ${cycle} (${kind}): plugin died code=${exit.code} signal=${exit.signal}; ${signatureOf(plugin.logs).slice(-2).join(" | ")}`);
    restarts++;
    plugin = await startPlugin({ runtime, args: variant.args, env: variant.env, dir, readyTimeoutMs: 90_000 });
  };

  let pluginStopped: () => void = () => {};
  const afterStop = new Promise<void>((resolve) => (pluginStopped = resolve));
  const idleStarted = Date.now();
  const idle = Array.from({ length: idleSessions }, (_, n) => {
    const owner = plugin;
    return idleSession(owner, n, idleMs, idleEnd === "sigterm" ? afterStop : Promise.resolve()).then(() => void idleClosed++, () => undefined);
  });

  for (let cycle = 0; cycle < cycles && Date.now() < deadline; cycle++) {
    const kind = KINDS[cycle % KINDS.length];
    lastKind = kind;
    if (injectAt.has(cycle)) process.kill(plugin.pid, "SIGABRT");
    try {
      await runCycle(plugin, variant, cycle, kind);
    } catch (error) {
      failedCalls++;
      const key = `${kind}: ${(error as ServiceError).code ?? ""} ${(error as Error).message.split("\n")[0].slice(0, 80)}`;
      failures[key] = (failures[key] ?? 0) + 1;
    }
    cyclesRun++;
    // A crash on GOAWAY lands a moment after close(): look before the next cycle.
    await sleep(2);
    if (!plugin.alive()) await recordDeath(cycle, kind);
    if (values.verbose && cycle % 50 === 0) console.log(`  ${name}: cycle ${cycle}, crashes ${crashes.length}, rss ${plugin.alive() ? plugin.rssKiB() : 0} KiB`);
  }
  if (idleEnd === "close") await Promise.all(idle);
  else await sleep(Math.max(0, idleStarted + idleMs + 2000 - Date.now()));
  await sleep(200);
  if (!plugin.alive()) await recordDeath(cyclesRun, idleSessions > 0 ? "idle-session" : lastKind);
  // With --idle-end sigterm the idle sessions are still connected: shutdown sends them GOAWAY.
  const stopped = await plugin.stop("SIGTERM", 5000);
  pluginStopped();
  await Promise.all(idle);
  if (stopped.code !== 0) {
    crashes.push({ cycle: cyclesRun, kind: "idle-session", code: stopped.code, signal: stopped.signal, signature: ["at SIGTERM", ...signatureOf(plugin.logs)] });
    console.log(`  SIGTERM: exit code=${stopped.code} signal=${stopped.signal} after ${stopped.elapsedMs.toFixed(0)} ms; ${signatureOf(plugin.logs).slice(-2).join(" | ")}`);
  }
  await plugin.cleanup();
  const seconds = (performance.now() - started) / 1000;
  const shutdownRuns = Number(values.shutdowns);
  const shutdown = shutdownRuns > 0 ? await shutdownRaces(variant, shutdownRuns, deadline + 60_000) : undefined;
  return { shutdown, variant: name, runtime, cyclesRun, crashes, failedCalls, failures, seconds, restarts, idleSessionsClosed: idleClosed };
}

async function main(): Promise<void> {
  const names = values.variants.split(",");
  for (const name of names) if (VARIANTS[name] === undefined) throw new Error(`unknown variant ${name}; known: ${Object.keys(VARIANTS).join(", ")}`);
  const results: VariantResult[] = [];
  const start = Date.now();
  for (const [i, name] of names.entries()) {
    const share = (maxMs - (Date.now() - start)) / (names.length - i);
    console.log(`variant ${name} (${VARIANTS[name].describe}) under ${runtime}: up to ${cycles} cycles, ${Math.round(share / 1000)} s`);
    results.push(await soak(name, VARIANTS[name], Date.now() + share));
  }
  console.log("\nvariant        runtime  cycles  crashes  crashes/100  failed calls  restarts  seconds (cycles)");
  for (const r of results) {
    const rate = r.cyclesRun === 0 ? 0 : (100 * r.crashes.length) / r.cyclesRun;
    console.log(`${r.variant.padEnd(14)} ${r.runtime.padEnd(8)} ${String(r.cyclesRun).padStart(6)}  ${String(r.crashes.length).padStart(7)}  ${rate.toFixed(2).padStart(11)}  ${String(r.failedCalls).padStart(12)}  ${String(r.restarts).padStart(8)}  ${r.seconds.toFixed(1).padStart(7)}`);
  }
  for (const r of results) {
    if (r.crashes.length > 0) {
      const byExit = new Map<string, number>();
      for (const c of r.crashes) byExit.set(`code=${c.code} signal=${c.signal} after ${c.kind}`, (byExit.get(`code=${c.code} signal=${c.signal} after ${c.kind}`) ?? 0) + 1);
      console.log(`\n${r.variant}: crash exits ${JSON.stringify(Object.fromEntries(byExit))}`);
      console.log(`${r.variant}: first failure signature:\n    ${r.crashes[0].signature.join("\n    ") || "(nothing on stderr)"}`);
    }
    if (Object.keys(r.failures).length > 0) console.log(`${r.variant}: failed calls ${JSON.stringify(r.failures)}`);
    if (idleSessions > 0) console.log(`${r.variant}: idle sessions closed cleanly ${r.idleSessionsClosed}/${idleSessions}`);
    if (r.shutdown !== undefined) {
      const s = r.shutdown;
      console.log(`${r.variant}: SIGTERM under in-flight calls: ${s.clean}/${s.runs} exit 0, ${s.crashes.length} crashes, ${s.slow} took >= 2 s (max ${s.maxMs.toFixed(0)} ms), ${s.callsInFlight} calls started`);
      if (s.crashes.length > 0) console.log(`    first: code=${s.crashes[0].code} signal=${s.crashes[0].signal}\n    ${s.crashes[0].signature.join("\n    ")}`);
    }
  }
  const ratio = results.length > 1 ? results.slice(1).map((r) => `${r.variant}/${results[0].variant} crash-rate ratio ${(r.crashes.length / Math.max(1, r.cyclesRun) / Math.max(1e-9, results[0].crashes.length / Math.max(1, results[0].cyclesRun))).toFixed(2)}`) : [];
  if (ratio.length > 0) console.log(`\n${ratio.join("\n")}`);
}

await main();
