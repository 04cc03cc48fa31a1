/**
 * Whole-machine CPU per connection at maximum loopback churn, measured in one run for:
 *   baseline  churn alone, no BPF attached
 *   floor     churn + the minimal C libbpf consumer of the same BPF object and the same programs as the
 *             plugin (scripts/bench/floor-consumer.c; tp_btf for the state change where the kernel takes it)
 *   floor-tp  the same consumer on the classic tracepoints only (-c): what tp_btf changed
 *   plugin    churn + the plugin's tracker stack (addon reader -> decoder -> hold-back -> table)
 * and printed as ratios: plugin/baseline (goal <= 1.10x), floor/baseline (goal <= 1.06x), plugin/floor.
 * Usage: node --import tsx scripts/bench/ebpf-churn.ts [seconds=10] [rounds=2]
 */
import { readFileSync } from "node:fs";
import { type Consumer, ensureChurnHelpers, floorBin, runChurn, startConsumer } from "./churn-run.ts";

const seconds = Number(process.argv[2] ?? 10);
const rounds = Number(process.argv[3] ?? 2);
ensureChurnHelpers();

function machineBusyTicks(): number {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = fields; // idle and iowait are not work
  return user + nice + system + irq + softirq + steal;
}

function processTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

interface Measurement {
  connections: number;
  busyTicks: number;
  consumerTicks: number;
  consumer?: Record<string, number>;
}

async function measure(consumer: Consumer | undefined): Promise<Measurement> {
  const busyBefore = machineBusyTicks();
  const consumerBefore = consumer ? processTicks(consumer.pid) : 0;
  const churn = runChurn(seconds);
  const busyTicks = machineBusyTicks() - busyBefore;
  const consumerTicks = consumer ? processTicks(consumer.pid) - consumerBefore : 0;
  await new Promise((r) => setTimeout(r, 300)); // let the consumer drain what is left
  return { connections: churn.connections, busyTicks, consumerTicks, consumer: consumer ? await consumer.stop() : undefined };
}

const perConnection = (m: Measurement) => m.busyTicks / m.connections;
const results: Record<string, Measurement[]> = { baseline: [], floor: [], floorTp: [], plugin: [] };
for (let round = 0; round < rounds; round++) {
  results.baseline.push(await measure(undefined));
  results.floor.push(await measure(await startConsumer(floorBin, ["-o", "build/tracker.bpf.o"], "stderr", /attached/)));
  results.floorTp.push(await measure(await startConsumer(floorBin, ["-c", "-o", "build/tracker.bpf.o"], "stderr", /attached/)));
  results.plugin.push(await measure(await startConsumer(process.execPath, ["--import", "tsx", "scripts/bench/tracker-process.ts"], "stdout", /^ready$/)));
}

const best = (list: Measurement[]) => list.reduce((a, b) => (perConnection(a) <= perConnection(b) ? a : b));
const baseline = best(results.baseline);
const floor = best(results.floor);
const floorTp = best(results.floorTp);
const plugin = best(results.plugin);
const ticksPerSecond = 100;
const row = (name: string, m: Measurement) => {
  const c = m.consumer ?? {};
  return `${name.padEnd(9)} ${String(Math.round(m.connections / seconds)).padStart(8)} conn/s  ${((perConnection(m) / ticksPerSecond) * 1e6).toFixed(2).padStart(7)} us CPU/conn  events ${String(c.events ?? "-").padStart(9)}  lost ${String(c.lost ?? "-").padStart(6)}  consumer CPU ${((m.consumerTicks / ticksPerSecond / seconds) * 100).toFixed(1)}%`;
};
console.log(`loopback churn, ${seconds} s per run, best of ${rounds} rounds, whole-machine CPU (/proc/stat)`);
console.log(row("baseline", baseline));
console.log(row("floor", floor));
console.log(row("floor-tp", floorTp));
console.log(row("plugin", plugin));
console.log(`ratio plugin/baseline ${(perConnection(plugin) / perConnection(baseline)).toFixed(2)}x (goal <= 1.10x)`);
console.log(`ratio floor/baseline  ${(perConnection(floor) / perConnection(baseline)).toFixed(2)}x (goal <= 1.06x)`);
console.log(`ratio floor-tp/baseline ${(perConnection(floorTp) / perConnection(baseline)).toFixed(2)}x (classic tracepoints only)`);
console.log(`ratio plugin/floor    ${(perConnection(plugin) / perConnection(floor)).toFixed(2)}x`);
console.log(`plugin events received ${plugin.consumer?.events}, lost ${plugin.consumer?.lost}, connections applied open ${plugin.consumer?.opened} / closed ${plugin.consumer?.closed}`);
