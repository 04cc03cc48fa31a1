/**
 * The conntrack dump at 100k flows: how long the plugin's conntrack source takes from start to a
 * fully applied dump (wall time, and the process's CPU time, which includes loading the addon and
 * the kernel's dump work in its recv calls), and what it costs in memory, against Debian's `conntrack -L` (conntrack-tools,
 * C, libnetfilter_conntrack) listing the same table in the same run. Flows are real (SYNs into a
 * namespace of ours, test/helpers/flow-namespace.ts). Three cases:
 *   nat-only   what the plugin keeps with eBPF live: NATed flows only (here: none are NATed)
 *   keep-all   what it keeps on the /proc fallback: every flow
 *   all-nat    every flow DNATed (a kube-proxy host's worst case), NATed flows kept and indexed
 * Usage: node --import tsx scripts/bench/conntrack-dump.ts [flows=100000] [repetitions=5]
 * (needs `conntrack` from Debian: apt-get install conntrack)
 */
import { execFileSync } from "node:child_process";
import { createFlowNamespace, type FlowNamespace } from "../../test/helpers/flow-namespace.ts";

const flows = Number(process.argv[2] ?? 100_000);
const repetitions = Number(process.argv[3] ?? 5);
const MiB = 1024 * 1024;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Wall and CPU time (its own, user + system) of `conntrack -L` listing the namespace's table to /dev/null. */
function conntrackList(ns: FlowNamespace): { ms: number; cpuMs: number } {
  const started = performance.now();
  const cpu = execFileSync("ip", ["netns", "exec", ns.name, "python3", "-c", [
    "import resource, subprocess",
    "subprocess.run(['conntrack', '-L', '-p', 'tcp'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)",
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)",
    "print((r.ru_utime + r.ru_stime) * 1000)",
  ].join("\n")], { encoding: "utf8" });
  return { ms: performance.now() - started, cpuMs: Number(cpu.trim()) };
}

async function ours(ns: FlowNamespace, keepAll: boolean): Promise<{ ms: number; cpuMs: number; rssMiB: number; heapMiB: number; kept: number; dumped: number }> {
  const reader = ns.reader({ keepAll });
  const { dumped } = await reader.next();
  await reader.stop();
  return {
    ms: dumped.ms,
    cpuMs: dumped.cpuMs,
    rssMiB: (dumped.rssBytes - dumped.rssBeforeBytes) / MiB,
    heapMiB: dumped.heapUsedBytes / MiB,
    kept: dumped.status.counters.flows,
    dumped: dumped.status.counters.lastDumpFlows,
  };
}

async function run(name: string, ns: FlowNamespace, keepAll: boolean): Promise<void> {
  const rows: Array<Awaited<ReturnType<typeof ours>>> = [];
  const reference: Array<{ ms: number; cpuMs: number }> = [];
  for (let i = 0; i < repetitions; i++) {
    reference.push(conntrackList(ns));
    rows.push(await ours(ns, keepAll));
  }
  const ms = median(rows.map((r) => r.ms));
  const cpuMs = median(rows.map((r) => r.cpuMs));
  const ref = median(reference.map((r) => r.ms));
  const refCpu = median(reference.map((r) => r.cpuMs));
  console.log(`${name.padEnd(9)} dumped ${rows[0].dumped} kept ${rows[0].kept}: ours ${ms.toFixed(0)} ms wall / ${cpuMs.toFixed(0)} ms CPU (goal <= 300), conntrack -L ${ref.toFixed(0)} ms wall / ${refCpu.toFixed(0)} ms CPU, ratio ${(ms / ref).toFixed(2)}x wall, ${(cpuMs / refCpu).toFixed(2)}x CPU; RSS +${median(rows.map((r) => r.rssMiB)).toFixed(1)} MiB, heap ${median(rows.map((r) => r.heapMiB)).toFixed(1)} MiB (medians of ${repetitions})`);
}

const plain = createFlowNamespace();
try {
  await plain.burst(flows);
  await run("nat-only", plain, false);
  await run("keep-all", plain, true);
} finally {
  plain.destroy();
}
// Every flow DNATed (destination rewritten by a rule of ours) in a namespace of its own.
const natted = createFlowNamespace();
try {
  natted.dnatAll();
  await natted.burst(flows);
  await run("all-nat", natted, false);
} finally {
  natted.destroy();
}
