/**
 * What conntrack costs the plugin at maximum churn: whole-machine CPU per connection of loopback
 * churn (build/bench/churn) in a network namespace of ours where the kernel tracks connections (a
 * nat chain with a conntrack rule, as on any NAT host; short TCP timeouts so that 60k connections a
 * second do not fill the table), measured in one run, rounds interleaved, for:
 *   baseline      churn alone (conntrack tracking, no plugin)
 *   conntrack-off the plugin's tracker stack in the namespace (eBPF), --no-conntrack
 *   conntrack-on  the same with its conntrack source reading the namespace's events
 * printed as on/off (goal <= 1.05x) and each against the baseline.
 * Usage: node --import tsx scripts/bench/conntrack-churn.ts [seconds=5] [rounds=3]
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { projectRoot } from "../../plugin/ebpf/native-addon.ts";

const seconds = Number(process.argv[2] ?? 5);
const rounds = Number(process.argv[3] ?? 3);
const churnBin = `${projectRoot}build/bench/churn`;
if (!existsSync(churnBin)) execFileSync("bash", [`${projectRoot}scripts/bench/build.sh`], { stdio: "inherit" });

const ns = `ctchurn-${process.pid}`;
const inNs = (...args: string[]) => execFileSync("ip", ["netns", "exec", ns, ...args], { encoding: "utf8" });

function machineBusyTicks(): number {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  return user + nice + system + irq + softirq + steal;
}

interface Run {
  connections: number;
  busyTicks: number;
  consumer?: Record<string, unknown>;
}

async function startTracker(conntrack: boolean): Promise<{ stop(): Promise<Record<string, unknown>> }> {
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, "--import", "tsx", "scripts/bench/tracker-process.ts"], {
    cwd: projectRoot, stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, CONNTRACK: conntrack ? "1" : "0" },
  });
  let out = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      out += `${line}\n`;
      if (line === "ready") resolve();
    });
    void exited.then(() => reject(new Error(`tracker exited before ready: ${out}`)));
  });
  return {
    async stop() {
      child.kill("SIGTERM");
      await exited;
      return JSON.parse(out.trim().split("\n").pop()!);
    },
  };
}

async function measure(tracker?: { stop(): Promise<Record<string, unknown>> }): Promise<Run> {
  const before = machineBusyTicks();
  const churn = JSON.parse(inNs(churnBin, "-d", String(seconds)).trim().split("\n").pop()!);
  const busyTicks = machineBusyTicks() - before;
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { connections: churn.connections, busyTicks, consumer: await tracker?.stop() };
}

execFileSync("ip", ["netns", "add", ns]);
try {
  inNs("ip", "link", "set", "lo", "up");
  for (const [key, value] of [["tcp_timeout_time_wait", 1], ["tcp_timeout_close", 1], ["tcp_timeout_fin_wait", 1], ["tcp_timeout_close_wait", 1], ["tcp_timeout_last_ack", 1]]) {
    inNs("sysctl", "-qw", `net.netfilter.nf_conntrack_${key}=${value}`);
  }
  inNs("iptables", "-t", "nat", "-N", "conntrack-CHURN");
  inNs("iptables", "-t", "nat", "-A", "OUTPUT", "-j", "conntrack-CHURN");
  inNs("iptables", "-t", "nat", "-A", "conntrack-CHURN", "-m", "conntrack", "--ctstate", "NEW", "-j", "RETURN");
  const results: Record<string, Run[]> = { baseline: [], off: [], on: [] };
  for (let round = 0; round < rounds; round++) {
    results.baseline.push(await measure());
    results.off.push(await measure(await startTracker(false)));
    results.on.push(await measure(await startTracker(true)));
  }
  const perConnection = (r: Run) => r.busyTicks / r.connections;
  const best = (list: Run[]) => list.reduce((a, b) => (perConnection(a) <= perConnection(b) ? a : b));
  const row = (name: string, r: Run) => `${name.padEnd(14)} ${String(Math.round(r.connections / seconds)).padStart(7)} conn/s  ${((perConnection(r) / 100) * 1e6).toFixed(2).padStart(7)} us CPU/conn${r.consumer ? `  events ${r.consumer.events} lost ${r.consumer.lost} conntrack ${JSON.stringify(r.consumer.conntrack)}` : ""}`;
  const [baseline, off, on] = [best(results.baseline), best(results.off), best(results.on)];
  console.log(`loopback churn in a conntrack-tracking namespace, ${seconds} s per run, best of ${rounds} interleaved rounds, whole-machine CPU (/proc/stat)`);
  console.log(row("baseline", baseline));
  console.log(row("conntrack-off", off));
  console.log(row("conntrack-on", on));
  console.log(`ratio on/off ${(perConnection(on) / perConnection(off)).toFixed(3)}x (goal <= 1.05x); off/baseline ${(perConnection(off) / perConnection(baseline)).toFixed(2)}x; on/baseline ${(perConnection(on) / perConnection(baseline)).toFixed(2)}x`);
  const ratios = results.on.map((r, i) => (perConnection(r) / perConnection(results.off[i])).toFixed(3));
  console.log(`per round on/off: ${ratios.join(", ")}`);
} finally {
  try {
    inNs("iptables", "-t", "nat", "-D", "OUTPUT", "-j", "conntrack-CHURN");
    inNs("iptables", "-t", "nat", "-F", "conntrack-CHURN");
    inNs("iptables", "-t", "nat", "-X", "conntrack-CHURN");
  } catch { /* namespace gone */ }
  execFileSync("ip", ["netns", "del", ns]);
}
