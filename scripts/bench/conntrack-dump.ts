/**
 * The conntrack dump at 100k flows: how long the plugin's conntrack source takes from start to a
 * fully applied dump, and what it costs in memory, against Debian's `conntrack -L` (conntrack-tools,
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

/** Wall time of `conntrack -L` listing the namespace's table to /dev/null. */
function conntrackList(ns: FlowNamespace): number {
  const started = performance.now();
  execFileSync("ip", ["netns", "exec", ns.name, "sh", "-c", "conntrack -L -p tcp >/dev/null 2>&1"]);
  return performance.now() - started;
}

async function ours(ns: FlowNamespace, keepAll: boolean): Promise<{ ms: number; rssMiB: number; heapMiB: number; kept: number; dumped: number }> {
  const reader = ns.reader({ keepAll });
  const { dumped } = await reader.next();
  await reader.stop();
  return {
    ms: dumped.ms,
    rssMiB: (dumped.rssBytes - dumped.rssBeforeBytes) / MiB,
    heapMiB: dumped.heapUsedBytes / MiB,
    kept: dumped.status.counters.flows,
    dumped: dumped.status.counters.lastDumpFlows,
  };
}

async function run(name: string, ns: FlowNamespace, keepAll: boolean): Promise<void> {
  const rows: Array<Awaited<ReturnType<typeof ours>>> = [];
  const reference: number[] = [];
  for (let i = 0; i < repetitions; i++) {
    reference.push(conntrackList(ns));
    rows.push(await ours(ns, keepAll));
  }
  const ms = median(rows.map((r) => r.ms));
  const ref = median(reference);
  console.log(`${name.padEnd(9)} dumped ${rows[0].dumped} kept ${rows[0].kept}: ours ${ms.toFixed(0)} ms (goal <= 300), conntrack -L ${ref.toFixed(0)} ms, ratio ${(ms / ref).toFixed(2)}x; RSS +${median(rows.map((r) => r.rssMiB)).toFixed(1)} MiB, heap ${median(rows.map((r) => r.heapMiB)).toFixed(1)} MiB (medians of ${repetitions})`);
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
