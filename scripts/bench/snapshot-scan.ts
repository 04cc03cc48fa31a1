/**
 * Socket snapshot benchmark: the BPF iterator (bpf/snapshot.bpf.c read by the addon, decoded by
 * plugin/snapshot; also its 5.8-5.10 path, probe reads, forced) against our /proc scan and the C /proc floor (procfs-floor.c, readlinkat), with
 * 1k, 10k and 100k established loopback connections held by conn-holder.c processes (several
 * under the nofile limit). Wall and CPU time (this process's user + system, which includes the
 * reader thread and the kernel's iterator walk), the event loop's longest stall during each async
 * scan, medians of interleaved repetitions.
 *
 * Then, at the largest size, the plugin's idle cost with that table: a tracker stack (eBPF live)
 * holding every connection, its CPU over an idle window, and the CPU of one reconcile: from the
 * iterator confirmed by digest (the idle case), from the iterator with one ghost in the table (its
 * digest bucket compared one by one), from /proc; idle CPU = (window CPU + one reconcile) / reconcile interval. The window's CPU includes
 * the events of everything else running on the machine (tracepoints are host-wide): it is printed
 * with the number of events received in it.
 *
 * Last, the plugin as it runs: a tracker stack with its periodic reconcile (every 60 s), its whole
 * process CPU (schedstat: every thread, V8's collector included) over --period-s after a warm-up
 * that lets the seed's garbage go.
 *
 *   node --import tsx scripts/bench/snapshot-scan.ts [--sizes 1000,10000,100000] [--reps 5] [--idle-s 20] [--period-s 180]
 *
 * Needs root (BPF, other processes' fd links) and gcc on first run (binaries go to build/bench).
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createLogger } from "../../plugin/log.ts";
import { defaultStackConfig, startTrackerStack } from "../../plugin/plugin.ts";
import { scanProc, scanProcSync } from "../../plugin/procfs/scan.ts";
import { scanSockets } from "../../plugin/snapshot/snapshot-scan.ts";
import { SocketSnapshot } from "../../plugin/snapshot/socket-snapshot.ts";
import { ConnectionHolders, ensureBenchHelpers } from "./holders.ts";

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "1000,10000,100000" },
    reps: { type: "string", default: "5" },
    "idle-s": { type: "string", default: "20" },
    "period-s": { type: "string", default: "180" },
  },
});
const sizes = values.sizes.split(",").map(Number);
const reps = Number(values.reps);
const idleS = Number(values["idle-s"]);
const periodS = Number(values["period-s"]);
/** Before the periodic window: the first reconcile (pids and names in line) and V8's memory reducer after the seed. */
const WARM_UP_S = 70;

/** This process's CPU time, every thread, from the scheduler (not sampled). */
function processCpuMs(): number {
  let ns = 0;
  for (const task of readdirSync("/proc/self/task")) {
    try {
      ns += Number(readFileSync(`/proc/self/task/${task}/schedstat`, "utf8").split(" ")[0]);
    } catch { /* a thread that ended */ }
  }
  return ns / 1e6;
}

async function periodicCost(size: number): Promise<string> {
  const stack = await startTrackerStack({
    ...defaultStackConfig, source: "auto", maxConnections: Math.max(65_536, size * 3), reconcileIntervalMs: RECONCILE_INTERVAL_S * 1000,
  }, createLogger("silent"));
  try {
    if (stack.supervisor.status().source !== "ebpf") throw new Error(`eBPF is not live: ${stack.supervisor.status().reason}`);
    await new Promise((r) => setTimeout(r, WARM_UP_S * 1000));
    const before = stack.supervisor.status().counters;
    const cpuBefore = processCpuMs();
    // No event-loop delay monitor here: its 1 ms timer alone costs ~2% of a core, 7x what is measured.
    await new Promise((r) => setTimeout(r, periodS * 1000));
    const cpuMs = processCpuMs() - cpuBefore;
    const after = stack.supervisor.status().counters;
    return `the plugin over ${periodS} s with its reconcile every ${RECONCILE_INTERVAL_S} s, ${stack.table.size} tracked: ${fmt(cpuMs)} CPU = ${(cpuMs / periodS / 10).toFixed(3)}% of a core; ` +
      `${after.reconciles - before.reconciles} reconciles, ${after.reconcilesConfirmed - before.reconcilesConfirmed} confirmed by digest, ${after.events - before.events} events from the rest of the machine`;
  } finally {
    await stack.stop();
  }
}
const outDir = ensureBenchHelpers();
const RECONCILE_INTERVAL_S = 60;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * What a stall over the scan's own slices is made of: gcMs, V8's longest collector pause in the run;
 * waitMs, the time the main thread sat runnable without a CPU (schedstat run delay, in total).
 */
interface Timing { wallMs: number; cpuMs: number; stallMs: number; gcMs: number; waitMs: number; found: number }

/** The calling thread's time runnable but not running (a process's threads, the kernel walk and V8's helpers share the cores). */
function mainThreadWaitMs(): number {
  return Number(readFileSync("/proc/thread-self/schedstat", "utf8").split(" ")[1]) / 1e6;
}

async function timed(scan: () => Promise<{ connections: readonly unknown[] }>): Promise<Timing> {
  const stalls = monitorEventLoopDelay({ resolution: 1 });
  let gcMs = 0;
  const collector = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs = Math.max(gcMs, entry.duration);
  });
  collector.observe({ entryTypes: ["gc"] });
  stalls.enable();
  const cpu = process.cpuUsage();
  const waitBefore = mainThreadWaitMs();
  const started = performance.now();
  const result = await scan();
  const wallMs = performance.now() - started;
  const used = process.cpuUsage(cpu);
  const waitMs = mainThreadWaitMs() - waitBefore;
  stalls.disable();
  await new Promise((r) => setImmediate(r)); // the observer's entries arrive a turn later
  collector.disconnect();
  return { wallMs, cpuMs: (used.user + used.system) / 1000, stallMs: stalls.max / 1e6, gcMs, waitMs, found: result.connections.length };
}

function runFloor(): { wallMs: number; cpuMs: number } {
  const run = spawnSync(join(outDir, "procfs-floor"), ["--at"], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`procfs-floor failed: ${run.stderr}`);
  const parsed = JSON.parse(run.stdout) as { totalMs: number; cpuMs: number };
  return { wallMs: parsed.totalMs, cpuMs: parsed.cpuMs };
}

const mid = (runs: Array<{ wallMs: number; cpuMs: number }>) => ({ wallMs: median(runs.map((r) => r.wallMs)), cpuMs: median(runs.map((r) => r.cpuMs)) });
const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

async function idleCost(size: number): Promise<string[]> {
  const log = createLogger("silent");
  const stack = await startTrackerStack({
    ...defaultStackConfig, source: "auto", maxConnections: Math.max(65_536, size * 3),
    // The bench drives the reconciles itself, one per scanner.
    reconcileIntervalMs: 3_600_000,
  }, log);
  try {
    if (stack.supervisor.status().source !== "ebpf") throw new Error(`eBPF is not live: ${stack.supervisor.status().reason}`);
    const tracked = stack.table.size;
    await new Promise((r) => setTimeout(r, 2000));
    const eventsBefore = stack.supervisor.status().counters.events;
    const idleCpu = process.cpuUsage();
    const idleStarted = performance.now();
    await new Promise((r) => setTimeout(r, idleS * 1000));
    const idleUsed = process.cpuUsage(idleCpu);
    const idleEvents = stack.supervisor.status().counters.events - eventsBefore;
    const idleMs = (idleUsed.user + idleUsed.system) / 1000;
    const idleWall = performance.now() - idleStarted;

    const reconcile = async () => timed(async () => {
      await stack.supervisor.reconcileNow();
      return { connections: [] };
    });
    const counters = () => stack.supervisor.status().counters;
    // The first reconcile after the seed brings pids and names in line; from then on an idle
    // table is the kernel's, and a reconcile is confirmed by digest (retried while other
    // processes' connections change the table during one).
    await reconcile();
    let viaIterator: Timing | undefined;
    for (let i = 0; i < 5 && viaIterator === undefined; i++) {
      const confirmedBefore = counters().reconcilesConfirmed;
      const run = await reconcile();
      if (counters().reconcilesConfirmed === confirmedBefore + 1) viaIterator = run;
    }
    if (viaIterator === undefined) throw new Error("no reconcile was confirmed by digest in 5 tries: the table keeps changing");
    if (stack.scans.iteratorScans < 2) throw new Error(`the reconcile did not use the iterator: ${stack.scans.describe()}`);
    // One connection the kernel does not have (a missed close): the reconcile compares its digest bucket one by one.
    const [, any] = stack.table.entries().next().value!;
    stack.table.open({ ...any, remotePort: any.remotePort === 1 ? 2 : 1 });
    const partialBefore = counters().reconcilesPartial;
    const whole = await reconcile();
    if (counters().reconcileRemoved < 1) throw new Error("the reconcile did not remove the ghost");
    const wholeHow = counters().reconcilesPartial === partialBefore + 1 ? "only the differing digest bucket compared one by one" : "compared whole (the table changed in most buckets meanwhile)";
    // The same stack, its scans forced to /proc: what a reconcile cost before the iterator.
    const ebpfLive = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(stack.supervisor), "trackerAttached")!;
    Object.defineProperty(stack.supervisor, "trackerAttached", { get: () => false, configurable: true });
    const viaProc = await reconcile();
    Object.defineProperty(stack.supervisor, "trackerAttached", ebpfLive);
    const perMinute = (r: Timing) => ((idleMs / idleWall) * RECONCILE_INTERVAL_S * 1000 + r.cpuMs) / (RECONCILE_INTERVAL_S * 1000) * 100;
    return [
      `plugin idle at ${tracked} tracked connections (${size} established, both ends), eBPF live:`,
      `  idle window ${(idleWall / 1000).toFixed(0)} s: ${fmt(idleMs)} CPU (${((idleMs / idleWall) * 100).toFixed(3)}% of a core), ${idleEvents} events from the rest of the machine`,
      `  one reconcile from the iterator, confirmed by digest: ${fmt(viaIterator.wallMs)} wall, ${fmt(viaIterator.cpuMs)} CPU, event loop stalled at most ${fmt(viaIterator.stallMs)} (longest GC pause ${fmt(viaIterator.gcMs)}; main thread waited for a CPU ${fmt(viaIterator.waitMs)} in all)`,
      `  one reconcile from the iterator, a ghost in the table (${wholeHow}): ${fmt(whole.wallMs)} wall, ${fmt(whole.cpuMs)} CPU, stalled at most ${fmt(whole.stallMs)} (longest GC pause ${fmt(whole.gcMs)}; main thread waited for a CPU ${fmt(whole.waitMs)} in all)`,
      `  one reconcile from /proc:        ${fmt(viaProc.wallMs)} wall, ${fmt(viaProc.cpuMs)} CPU, event loop stalled at most ${fmt(viaProc.stallMs)} (longest GC pause ${fmt(viaProc.gcMs)}; main thread waited for a CPU ${fmt(viaProc.waitMs)} in all)`,
      `  idle CPU with a reconcile every ${RECONCILE_INTERVAL_S} s: iterator ${perMinute(viaIterator).toFixed(3)}% of a core (${perMinute(whole).toFixed(3)}% had each one ghost), /proc ${perMinute(viaProc).toFixed(3)}% (ratio ${(perMinute(viaProc) / perMinute(viaIterator)).toFixed(1)}x)`,
    ];
  } finally {
    await stack.stop();
  }
}

async function main(): Promise<void> {
  const holders = new ConnectionHolders(join(outDir, "conn-holder"));
  const stop = () => void holders.stop().finally(() => process.exit(130));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  const snapshot = new SocketSnapshot();
  const probed = new SocketSnapshot(undefined, { probeReads: true });
  const rows: string[][] = [];
  let idle: string[] = [];
  try {
    for (const size of sizes) {
      await holders.grow(size);
      console.log(`${size} connections held by ${holders.pids.length} process(es)`);
      // Warm-up: the first /proc walk instantiates a dentry per /proc/PID/fd/N.
      scanProcSync();
      runFloor();
      await scanSockets(snapshot);
      await scanSockets(probed);
      const iter: Timing[] = [], iterProbed: Timing[] = [], proc: Timing[] = [], idle: Timing[] = [], floor: Array<{ wallMs: number; cpuMs: number }> = [];
      let kernelMs: number[] = [];
      for (let i = 0; i < reps; i++) {
        // Interleaved, so that load from elsewhere on the machine hits all of them alike.
        iter.push(await timed(async () => {
          const scan = await scanSockets(snapshot);
          kernelMs.push(scan.readMs);
          return scan;
        }));
        iterProbed.push(await timed(() => scanSockets(probed)));
        proc.push(await timed(() => scanProc()));
        floor.push(runFloor());
        // The reference for stalls: an event loop doing nothing for as long, on this shared machine.
        idle.push(await timed(async () => {
          await new Promise((r) => setTimeout(r, Math.max(200, iter[iter.length - 1].wallMs)));
          return { connections: [] };
        }));
      }
      const it = mid(iter), ip = mid(iterProbed), pr = mid(proc), fl = mid(floor);
      const worst = (runs: Timing[]) => Math.max(...runs.map((r) => r.stallMs));
      const iterStall = worst(iter), procStall = worst(proc), idleStall = worst(idle);
      const iterGc = Math.max(...iter.map((r) => r.gcMs)), iterWait = median(iter.map((r) => r.waitMs));
      const found = Math.min(...iter.map((r) => r.found));
      if (found < 2 * size) console.warn(`  warning: the iterator found ${found} connections, expected at least ${2 * size}`);
      console.log(`  iterator: ${fmt(it.wallMs)} (cpu ${fmt(it.cpuMs)}; kernel walk and read ${fmt(median(kernelMs))}), stall at most ${fmt(iterStall)} (longest GC pause ${fmt(iterGc)}; main thread waited for a CPU ${fmt(iterWait)} in all, median); ${found} connections`);
      console.log(`  iterator, 5.8-5.10 path (probe reads): ${fmt(ip.wallMs)} (cpu ${fmt(ip.cpuMs)})`);
      console.log(`  our /proc scan: ${fmt(pr.wallMs)} (cpu ${fmt(pr.cpuMs)}), stall at most ${fmt(procStall)}`);
      console.log(`  an idle event loop for as long stalled at most ${fmt(idleStall)} (this machine's own noise)`);
      console.log(`  C /proc floor (readlinkat): ${fmt(fl.wallMs)} (cpu ${fmt(fl.cpuMs)})`);
      rows.push([
        String(size), fmt(it.wallMs), fmt(it.cpuMs), fmt(median(kernelMs)), fmt(iterStall), fmt(ip.wallMs), fmt(ip.cpuMs), fmt(pr.wallMs), fmt(pr.cpuMs), fmt(procStall), fmt(idleStall), fmt(fl.wallMs), fmt(fl.cpuMs),
        (pr.wallMs / it.wallMs).toFixed(1), (pr.cpuMs / it.cpuMs).toFixed(1), (fl.wallMs / it.wallMs).toFixed(1), (fl.cpuMs / it.cpuMs).toFixed(1),
      ]);
      kernelMs = [];
    }
    if (idleS > 0) idle = await idleCost(sizes[sizes.length - 1]);
    if (periodS > 0) idle.push(await periodicCost(sizes[sizes.length - 1]));
  } finally {
    snapshot.close();
    probed.close();
    await holders.stop();
  }
  const header = ["connections", "iter wall", "iter cpu", "iter kernel", "iter stall", "probed wall", "probed cpu", "/proc wall", "/proc cpu", "/proc stall", "idle stall", "C wall", "C cpu", "/proc÷iter wall", "/proc÷iter cpu", "C÷iter wall", "C÷iter cpu"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  console.log(`\n${line(header)}\n${rows.map(line).join("\n")}`);
  if (idle.length > 0) console.log(`\n${idle.join("\n")}`);
}

await main();
