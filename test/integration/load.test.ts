/**
 * Load: 200 concurrent Report callers and 20 Watch streams for 60 s while connections churn:
 * no failed call, memory flat after warm-up.
 *
 * The plugin is the real process under Node on its Unix socket, tracking with eBPF. The test makes
 * the churn itself, inside two test namespaces: a Python client connecting and closing at a bounded
 * rate against a server that accepts and closes, plus a few hundred held connections so that every
 * Report carries real rows. Memory, after a 15 s warm-up, two ways: the plugin's VmRSS from
 * /proc/PID/status sampled every second (last third's average within a generous bound of the first
 * third's), and the live JS heap after every full GC from the plugin's own --trace-gc output (the
 * tight check: a leak of a few hundred bytes per call or change would show; GC saw-teeth do not).
 *
 * The plugin tracks every TCP connection on the host: another workload churning on the same host
 * at the same time (a benchmark making 100k connections) lands in every caller's closed buffer and
 * makes each Report tens of thousands of rows. Run it alone, as `npm test` does (jobs: 1).
 */
import t from "tap";
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { Metadata, type ServiceError } from "@grpc/grpc-js";
import { type EndpointReport, type EndpointReporterClient, Source, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { createTestNetwork } from "../helpers/netns.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { ROOT, startPlugin } from "../helpers/plugin-child.ts";
import { unary } from "../helpers/server-harness.ts";

const DURATION_MS = 60_000;
const WARMUP_MS = 15_000;
const CALLERS = 200;
const WATCHERS = 20;
const CHURN_PER_SECOND = 100;
const HELD = 300;
const CALL_DEADLINE_MS = 20_000;

/** Connect-and-close at a fixed rate, forever; prints a count every 100 connections. */
const CHURN_PY = `
import socket, sys, time
host, port, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
interval, n, t0 = 1.0 / rate, 0, time.monotonic()
while True:
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.connect((host, port))
    except OSError as e:
        print("error", e.errno, flush=True)
    c.close()
    n += 1
    if n % 100 == 0:
        print(n, flush=True)
    delay = t0 + n * interval - time.monotonic()
    if delay > 0:
        time.sleep(delay)
`;

function startChurn(netns: string, host: string, port: number, rate: number): { child: ChildProcess; made: () => number; errors: () => number } {
  const child = spawn("ip", ["netns", "exec", netns, "python3", "-u", "-c", CHURN_PY, host, String(port), String(rate)], { stdio: ["ignore", "pipe", "pipe"] });
  let made = 0;
  let errors = 0;
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    for (const line of d.split("\n")) {
      if (line.startsWith("error")) errors++;
      else if (/^\d+$/.test(line)) made = Number(line);
    }
  });
  return { child, made: () => made, errors: () => errors };
}

/** The watcher process: opens `count` Watch streams and prints their state as one JSON line a second. */
const WATCHERS_JS = `
const { credentials } = await import("@grpc/grpc-js");
const { EndpointReporterClient, EventType } = await import(process.argv[1]);
const [target, count] = [process.argv[2], Number(process.argv[3])];
const streams = Array.from({ length: count }, (_, i) => {
  const state = { snapshot: false, live: 0, ended: null };
  const client = new EndpointReporterClient(target, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
  const call = client.watch({ clientId: "load-watch-" + i });
  call.on("data", (e) => {
    if (e.type === EventType.EVENT_TYPE_SNAPSHOT_COMPLETE) state.snapshot = true;
    else if (e.type === EventType.EVENT_TYPE_OPEN || e.type === EventType.EVENT_TYPE_CLOSE) state.live++;
  });
  call.on("error", (e) => (state.ended ??= "error " + e.code + " " + e.details));
  call.on("end", () => (state.ended ??= "end"));
  return state;
});
setInterval(() => process.stdout.write(JSON.stringify(streams) + "\\n"), 1000);
`;

interface WatchState { snapshot: boolean; live: number; ended: string | null }

function startWatchers(target: string, count: number) {
  const generated = new URL("../../plugin/generated/endpoint_reporter.ts", import.meta.url).pathname;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", WATCHERS_JS, generated, target, String(count)], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  let last: WatchState[] = [];
  let snapshots: () => void = () => {};
  const allSnapshots = new Promise<void>((resolve) => (snapshots = resolve));
  createInterface({ input: child.stdout! }).on("line", (line) => {
    last = JSON.parse(line) as WatchState[];
    if (last.length === count && last.every((w) => w.snapshot)) snapshots();
  });
  return { child, allSnapshots, last: () => last };
}

/** utime + stime of a process, in clock ticks (USER_HZ, 100 on Linux). */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

t.test("Load: 200 concurrent Report callers and 20 Watch streams for 60 s while connections churn: no failed call, memory flat after warm-up", async (t) => {
  const net = createTestNetwork("l");
  t.teardown(() => net.destroy());
  // --trace-gc: the live heap after every full GC (Mark-Compact), the sharpest leak signal.
  const heapAfterGc: Array<{ atMs: number; mb: number }> = [];
  let loadStarted = Number.POSITIVE_INFINITY;
  const plugin = await startPlugin({
    runtime: "node",
    nodeArgs: ["--trace-gc"],
    onStdout: (line) => {
      const m = /: Mark-Compact [\d.]+ \([\d.]+\) -> ([\d.]+) \(/.exec(line);
      if (m !== null && Date.now() >= loadStarted) heapAfterGc.push({ atMs: Date.now() - loadStarted, mb: Number(m[1]) });
    },
  });
  t.teardown(() => plugin.cleanup());
  t.equal(plugin.ready.source, "ebpf");

  const holdServer = await startServer(net.a.name, net.a.ipv4, 8201, "hold");
  t.teardown(() => holdServer.stop());
  const closeServer = await startServer(net.a.name, net.a.ipv4, 8202, "close");
  t.teardown(() => closeServer.stop());
  const held = startClient(net.b.name, net.a.ipv4, 8201, HELD, true);
  t.teardown(() => held.stop());
  t.equal((await held.linesUntil("done")).filter((l) => l.startsWith("error")).length, 0, `${HELD} held connections`);

  const clients: EndpointReporterClient[] = [];
  const newClient = () => {
    // One connection per caller: 220 HTTP/2 sessions on the plugin's socket.
    const c = plugin.client({ "grpc.use_local_subchannel_pool": 1 });
    clients.push(c);
    return c;
  };
  t.teardown(() => clients.forEach((c) => c.close()));

  // 20 Watch streams, reading everything, in a process of their own (as Watch consumers are):
  // in this one, 200 callers decoding ~1,000-row reports would starve them of CPU.
  const watchers = startWatchers(plugin.grpcTarget, WATCHERS);
  t.teardown(() => void watchers.child.kill("SIGKILL"));
  await watchers.allSnapshots;

  const churn = startChurn(net.b.name, net.a.ipv4, 8202, CHURN_PER_SECOND);
  t.teardown(() => void churn.child.kill("SIGKILL"));

  // 200 callers, each its own client id, each looping Report until the time is up.
  const started = Date.now();
  loadStarted = started;
  const cpuAtStart = cpuTicks(plugin.pid);
  const endAt = started + DURATION_MS;
  let calls = 0;
  let rows = 0;
  const failures: string[] = [];
  const latencies: number[] = [];
  const callers = Array.from({ length: CALLERS }, async (_, i) => {
    const client = newClient();
    while (Date.now() < endAt) {
      const t0 = performance.now();
      try {
        const r = await new Promise<EndpointReport>((resolve, reject) => {
          client.report({ clientId: `load-caller-${i}` }, new Metadata(), { deadline: Date.now() + CALL_DEADLINE_MS }, (error, value) => (error ? reject(error) : resolve(value)));
        });
        calls++;
        rows += r.connections.length;
        if (calls % 16 === 0) latencies.push(performance.now() - t0);
      } catch (error) {
        failures.push(`caller ${i}: ${(error as ServiceError).code} ${(error as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });

  // RSS every second; the Watch progress mark 10 s before the end.
  const samples: Array<{ atMs: number; rssKiB: number }> = [];
  const sampler = setInterval(() => {
    if (plugin.alive()) samples.push({ atMs: Date.now() - started, rssKiB: plugin.rssKiB() });
  }, 1000);
  let liveAtMark: number[] = [];
  const mark = setTimeout(() => (liveAtMark = watchers.last().map((w) => w.live)), DURATION_MS - 10_000);
  await Promise.all(callers);
  const pluginCpuPercent = Math.round(cpuTicks(plugin.pid) - cpuAtStart) / (DURATION_MS / 1000);
  clearInterval(sampler);
  clearTimeout(mark);

  const status = await unary<TrackerStatus>((cb) => clients[0].getStatus({}, cb));
  t.comment(JSON.stringify({
    calls, callsPerSecond: Math.round(calls / (DURATION_MS / 1000)), meanRows: Math.round(rows / Math.max(1, calls)),
    p50Ms: Math.round(latencies.sort((a, b) => a - b)[Math.floor(latencies.length / 2)] ?? 0), p99Ms: Math.round(latencies[Math.floor(latencies.length * 0.99)] ?? 0),
    churned: churn.made(), watchEvents: watchers.last().reduce((s, w) => s + w.live, 0), lost: status.counters?.lost, skipped: status.counters?.skipped, events: status.counters?.events, pluginCpuPercent,
  }));

  t.ok(plugin.alive(), "the plugin is alive");
  t.equal(status.source, Source.SOURCE_EBPF, `eBPF stayed live under the load (${status.reason})`);
  t.equal(failures.length, 0, `no failed Report call (${failures.slice(0, 3).join("; ")})`);
  t.ok(calls > CALLERS * 10, `every caller kept calling: ${calls} calls`);
  t.ok(churn.made() >= CHURN_PER_SECOND * (DURATION_MS / 1000) * 0.5 && churn.errors() === 0, `connections churned: ${churn.made()}, ${churn.errors()} connect errors`);
  await new Promise((r) => setTimeout(r, 1500)); // one more report from the watcher process
  const streams = watchers.last();
  t.equal(streams.length, WATCHERS);
  t.same(streams.filter((w) => w.ended !== null).map((w) => w.ended), [], "all 20 Watch streams still open");
  t.ok(streams.every((w, i) => w.live > (liveAtMark[i] ?? 0)), "every Watch stream still receiving changes in the last 10 s");

  const steady = samples.filter((s) => s.atMs >= WARMUP_MS);
  const third = Math.floor(steady.length / 3);
  t.ok(third >= 10, `enough memory samples after warm-up (${steady.length})`);
  const first = mean(steady.slice(0, third).map((s) => s.rssKiB));
  const last = mean(steady.slice(-third).map((s) => s.rssKiB));
  // RSS wobbles by tens of MiB under this load (malloc arenas, HTTP/2 session buffers) while the
  // live heap stays flat: a generous bound here, the tight one on the heap after full GCs below.
  const boundKiB = Math.max(first * 1.3, first + 32 * 1024);
  t.comment(`RSS KiB: warm-up end ${steady[0]?.rssKiB}, first third avg ${Math.round(first)}, last third avg ${Math.round(last)}, max ${Math.max(...samples.map((s) => s.rssKiB))}, bound ${Math.round(boundKiB)}`);
  t.ok(last <= boundKiB, `RSS flat after warm-up: last third ${Math.round(last / 1024)} MiB vs first third ${Math.round(first / 1024)} MiB (bound ${Math.round(boundKiB / 1024)} MiB)`);

  const gcs = heapAfterGc.filter((g) => g.atMs >= WARMUP_MS);
  const gcThird = Math.floor(gcs.length / 3);
  t.ok(gcThird >= 2, `full GCs after warm-up to compare (${gcs.length})`);
  const gcFirst = mean(gcs.slice(0, gcThird).map((g) => g.mb));
  const gcLast = mean(gcs.slice(-gcThird).map((g) => g.mb));
  const gcBound = Math.max(gcFirst * 1.25, gcFirst + 16);
  t.comment(`live heap after full GC, MB: ${gcs.map((g) => g.mb.toFixed(0)).join(" ")}`);
  t.ok(gcLast <= gcBound, `live heap flat after warm-up: last third ${gcLast.toFixed(1)} MB vs first third ${gcFirst.toFixed(1)} MB (bound ${gcBound.toFixed(1)} MB)`);

  watchers.child.kill("SIGTERM");
  clients.forEach((c) => c.close());
  const stopped = await plugin.stop("SIGTERM");
  t.equal(stopped.code, 0, "clean exit after the load");
});
