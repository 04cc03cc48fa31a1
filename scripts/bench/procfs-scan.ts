/**
 * /proc scan benchmark: our scan against a C floor doing the same work (procfs-floor.c, with full-path
 * readlink and with readlinkat, which is what our native fd walk uses), against our scan with the JS
 * fd walk (the previous version, and what runs when the addon is not built) and against `ss -tanp`,
 * with 1k, 10k and 100k established loopback connections held by conn-holder.c.
 *
 *   node --import tsx scripts/bench/procfs-scan.ts [--sizes 1000,10000,100000] [--reps 3] [--no-ss]
 *
 * Needs root (other processes' fd links) and gcc on first run (binaries go to build/bench).
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { type ProcScan, scanProc, scanProcSync } from "../../plugin/procfs/scan.ts";
import { ConnectionHolders, ensureBenchHelpers } from "./holders.ts";

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "1000,10000,100000" },
    reps: { type: "string", default: "3" },
    "no-ss": { type: "boolean", default: false },
  },
});
const sizes = values.sizes.split(",").map(Number);
const reps = Number(values.reps);
const outDir = ensureBenchHelpers();

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Wall and CPU (user + system) milliseconds; CPU time is the steadier figure on a shared machine. */
interface Timing { wallMs: number; cpuMs: number }

interface FloorRun extends Timing { parseMs: number; fdWalkMs: number; established: number; owned: number }

function runFloor(...args: string[]): FloorRun {
  const run = spawnSync(join(outDir, "procfs-floor"), args, { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`procfs-floor failed: ${run.stderr}`);
  const parsed = JSON.parse(run.stdout) as FloorRun & { totalMs: number };
  return { ...parsed, wallMs: parsed.totalMs };
}

function timeSs(): number {
  const started = performance.now();
  const run = spawnSync("ss", ["-tanp"], { stdio: ["ignore", "ignore", "inherit"] });
  if (run.status !== 0) throw new Error(`ss failed with ${run.status}`);
  return performance.now() - started;
}

async function timeOurs(scan: () => ProcScan | Promise<ProcScan>): Promise<Timing & { attributed: number }> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  const result = await scan();
  const wallMs = performance.now() - started;
  const used = process.cpuUsage(cpu);
  return { wallMs, cpuMs: (used.user + used.system) / 1000, attributed: result.connections.filter((c) => c.pid !== 0).length };
}

const mid = <T extends Timing>(runs: T[]): Timing => ({ wallMs: median(runs.map((r) => r.wallMs)), cpuMs: median(runs.map((r) => r.cpuMs)) });
const fmt = (ms: number) => (Number.isNaN(ms) ? "-" : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

async function main(): Promise<void> {
  const holders = new ConnectionHolders(join(outDir, "conn-holder"));
  const stop = () => void holders.stop().finally(() => process.exit(130));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  const rows: string[][] = [];
  try {
    for (const size of sizes) {
      const grown = performance.now();
      await holders.grow(size);
      console.log(`${size} connections held by ${holders.pids.length} process(es), set up in ${fmt(performance.now() - grown)}`);
      // Warm-up: the first walk instantiates a dentry per /proc/PID/fd/N; whoever ran first would pay it.
      scanProcSync();
      runFloor();
      const sync: Timing[] = [], async: Array<Timing & { attributed: number }> = [], jsWalk: Timing[] = [], floor: FloorRun[] = [], floorAt: FloorRun[] = [];
      let worstStallMs = 0;
      for (let i = 0; i < reps; i++) {
        // Interleaved, so that load from elsewhere on the machine hits all of them alike.
        sync.push(await timeOurs(() => scanProcSync()));
        const stalls = monitorEventLoopDelay({ resolution: 1 });
        stalls.enable();
        async.push(await timeOurs(() => scanProc()));
        stalls.disable();
        worstStallMs = Math.max(worstStallMs, stalls.max / 1e6);
        jsWalk.push(await timeOurs(() => scanProcSync({ fdWalker: "js" })));
        floor.push(runFloor());
        floorAt.push(runFloor("--at"));
      }
      const attributed = Math.min(...async.map((r) => r.attributed));
      if (attributed < 2 * size) console.warn(`  warning: our scan attributed ${attributed} sockets, expected at least ${2 * size}`);
      const ssMs = values["no-ss"] ? Number.NaN : size >= 50_000 ? timeSs() : median(Array.from({ length: reps }, timeSs));
      const s = mid(sync), a = mid(async), j = mid(jsWalk), f = mid(floor), fa = mid(floorAt);
      const parse = median(floor.map((r) => r.parseMs)), walk = median(floor.map((r) => r.fdWalkMs));
      console.log(`  ours (native fd walk): sync ${fmt(s.wallMs)} (cpu ${fmt(s.cpuMs)}), async ${fmt(a.wallMs)} (cpu ${fmt(a.cpuMs)}, event loop stalled at most ${fmt(worstStallMs)}); ${attributed} sockets attributed`);
      console.log(`  ours with the JS fd walk: sync ${fmt(j.wallMs)} (cpu ${fmt(j.cpuMs)})`);
      console.log(`  C floor: ${fmt(f.wallMs)} (cpu ${fmt(f.cpuMs)}; parse ${fmt(parse)} + fd walk ${fmt(walk)}); with readlinkat ${fmt(fa.wallMs)}`);
      console.log(`  ss -tanp: ${fmt(ssMs)}`);
      rows.push([
        String(size), fmt(s.wallMs), fmt(a.wallMs), fmt(j.wallMs), fmt(f.wallMs), fmt(fa.wallMs), fmt(ssMs),
        (s.wallMs / f.wallMs).toFixed(2), (a.wallMs / f.wallMs).toFixed(2), (a.wallMs / fa.wallMs).toFixed(2), (s.cpuMs / fa.cpuMs).toFixed(2),
        (j.wallMs / s.wallMs).toFixed(2), Number.isNaN(ssMs) ? "-" : (a.wallMs / ssMs).toFixed(3),
      ]);
    }
  } finally {
    await holders.stop();
  }
  const header = ["connections", "ours sync", "ours async", "JS walk sync", "C floor", "C readlinkat", "ss -tanp", "sync/C", "async/C", "async/C-at", "cpu sync/C-at", "JS/native", "async/ss"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  console.log(`\n${line(header)}\n${rows.map(line).join("\n")}`);
}

await main();
