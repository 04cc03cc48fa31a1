/**
 * The tracker programs' own run time per connection, this checkout's build/tracker.bpf.o against
 * an earlier revision's (the previous version, built from `git show REV:bpf/...` into a temporary
 * directory by scripts/build-bpf.sh), both loaded by the floor consumer
 * (scripts/bench/floor-consumer.c: the plugin's own program choice) under maximum loopback churn
 * (build/bench/churn). The kernel's BPF statistics (kernel.bpf_stats_enabled, turned on for the
 * run and restored after) give each program's run_time_ns and run_cnt; divided by the connections
 * the churn made, that is ns of program per connection, free of the machine's noise that the
 * whole-machine figures of ebpf-churn.ts carry. Rounds alternate the two objects.
 *
 *   node --import tsx scripts/bench/bpf-run-time.ts [--against HEAD~1] [--seconds 5] [--rounds 3]
 *
 * Needs root (BPF), clang and bpftool (scripts/setup.sh installs them).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { packageRoot } from "../../plugin/package-root.ts";
import { ensureChurnHelpers, floorBin, runChurn, startConsumer } from "./churn-run.ts";

const { values } = parseArgs({
  options: {
    against: { type: "string", default: "HEAD~1" },
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const STATS = "/proc/sys/kernel/bpf_stats_enabled";

interface ProgramStats { id: number; name: string; run_time_ns?: number; run_cnt?: number; recursion_misses?: number }

function programs(): ProgramStats[] {
  return JSON.parse(execFileSync("bpftool", ["prog", "show", "-j"], { encoding: "utf8" })) as ProgramStats[];
}

/** The earlier revision's BPF sources, compiled exactly as scripts/build-bpf.sh compiles ours. */
function buildRevision(rev: string, dir: string): string {
  const sources = join(dir, "bpf");
  mkdirSync(sources, { recursive: true });
  const files = execFileSync("git", ["ls-tree", "--name-only", `${rev}:bpf`], { cwd: packageRoot, encoding: "utf8" }).split("\n").filter((f) => f !== "");
  for (const file of files) writeFileSync(join(sources, file), execFileSync("git", ["show", `${rev}:bpf/${file}`], { cwd: packageRoot }));
  execFileSync("bash", [join(packageRoot, "scripts/build-bpf.sh")], { env: { ...process.env, BPF_SOURCE_DIR: sources, BPF_OUT_DIR: join(dir, "build") }, stdio: ["ignore", "ignore", "inherit"] });
  return join(dir, "build/tracker.bpf.o");
}

/** One churn run with the floor consumer on `object`: ns of each program per connection. */
async function measure(object: string): Promise<Map<string, number>> {
  const before = new Set(programs().map((p) => p.id));
  const consumer = await startConsumer(floorBin, ["-o", object], "stderr", /attached \d+ programs/);
  try {
    const ours = () => programs().filter((p) => !before.has(p.id) && p.name.startsWith("handle_"));
    const start = new Map(ours().map((p) => [p.id, p.run_time_ns ?? 0]));
    const churn = runChurn(seconds);
    const perConnection = new Map<string, number>();
    for (const p of ours()) perConnection.set(p.name, ((p.run_time_ns ?? 0) - (start.get(p.id) ?? 0)) / churn.connections);
    return perConnection;
  } finally {
    await consumer.stop();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  ensureChurnHelpers();
  const dir = mkdtempSync(join(tmpdir(), "bpf-run-time-"));
  const statsBefore = readFileSync(STATS, "utf8").trim();
  try {
    const previous = buildRevision(values.against, dir);
    const current = join(packageRoot, "build/tracker.bpf.o");
    writeFileSync(STATS, "1");
    const runs: Record<"previous" | "current", Array<Map<string, number>>> = { previous: [], current: [] };
    for (let round = 0; round < rounds; round++) {
      runs.previous.push(await measure(previous));
      runs.current.push(await measure(current));
    }
    const names = [...new Set([...runs.previous, ...runs.current].flatMap((m) => [...m.keys()]))].sort();
    const of = (which: "previous" | "current", name: string) => median(runs[which].map((m) => m.get(name) ?? 0));
    console.log(`tracker programs' run time per connection (kernel BPF stats), loopback churn ${seconds} s, median of ${rounds} alternating rounds`);
    console.log(`${"program".padEnd(34)} ${values.against.padStart(12)} ${"this checkout".padStart(14)}   ratio`);
    let previousSum = 0, currentSum = 0;
    for (const name of names) {
      const p = of("previous", name), c = of("current", name);
      previousSum += p;
      currentSum += c;
      console.log(`${name.padEnd(34)} ${p.toFixed(0).padStart(9)} ns ${c.toFixed(0).padStart(11)} ns   ${p > 0 ? (c / p).toFixed(2) : "-"}x`);
    }
    console.log(`${"all".padEnd(34)} ${previousSum.toFixed(0).padStart(9)} ns ${currentSum.toFixed(0).padStart(11)} ns   ${(currentSum / previousSum).toFixed(2)}x`);
  } finally {
    writeFileSync(STATS, statsBefore);
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
