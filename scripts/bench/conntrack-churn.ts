/**
 * What conntrack costs the plugin at maximum churn: CPU per connection of loopback
 * churn (build/bench/churn) in a network namespace of ours where the kernel tracks connections (a
 * nat chain with a conntrack rule, as on any NAT host; short TCP timeouts so that 60k connections a
 * second do not fill the table), measured in one run, rounds interleaved, for:
 *   baseline      churn alone (conntrack tracking, no plugin)
 *   conntrack-off the plugin's tracker stack in the namespace (eBPF), --no-conntrack
 *   conntrack-on  the same with its conntrack source reading the namespace's events
 * printed as on/off (goal <= 1.05x) and each against the baseline. The CPU counted is the churn
 * process's own (user + system, which includes the kernel's conntrack and BPF work in its
 * syscalls and the loopback softirqs they run) plus the tracker process's, not the whole
 * machine's: on a shared machine the others' work would swamp the difference. Medians of the
 * interleaved rounds, and each round's on/off.
 * Usage: node --import tsx scripts/bench/conntrack-churn.ts [seconds=5] [rounds=3]
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { packageRoot as projectRoot } from "../../plugin/package-root.ts";

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
  /** CPU ms of the churn process and of the tracker during the churn. */
  churnMs: number;
  trackerMs: number;
  busyTicks: number;
  consumer?: Record<string, unknown>;
}

function processMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime + stime, 100 ticks a second
}

async function startTracker(conntrack: boolean): Promise<{ pid: number; stop(): Promise<Record<string, unknown>> }> {
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
    pid: child.pid!, // ip netns exec execs the command: same process
    async stop() {
      child.kill("SIGTERM");
      await exited;
      return JSON.parse(out.trim().split("\n").pop()!);
    },
  };
}

async function measure(tracker?: { pid: number; stop(): Promise<Record<string, unknown>> }): Promise<Run> {
  const before = machineBusyTicks();
  const trackerBefore = tracker === undefined ? 0 : processMs(tracker.pid);
  const churn = JSON.parse(inNs(churnBin, "-d", String(seconds)).trim().split("\n").pop()!);
  const busyTicks = machineBusyTicks() - before;
  await new Promise((resolve) => setTimeout(resolve, 300)); // the tracker drains what is left
  const trackerMs = tracker === undefined ? 0 : processMs(tracker.pid) - trackerBefore;
  return { connections: churn.connections, churnMs: churn.cpuUserMs + churn.cpuSysMs, trackerMs, busyTicks, consumer: await tracker?.stop() };
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
  const perConnection = (r: Run) => (r.churnMs + r.trackerMs) / r.connections; // ms
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const us = (ms: number) => (ms * 1000).toFixed(2).padStart(7);
  const row = (name: string, list: Run[]) => {
    const last = list[list.length - 1];
    return `${name.padEnd(14)} ${String(Math.round(median(list.map((r) => r.connections)) / seconds)).padStart(7)} conn/s  ${us(median(list.map(perConnection)))} us CPU/conn (churn ${us(median(list.map((r) => r.churnMs / r.connections)))}, tracker ${us(median(list.map((r) => r.trackerMs / r.connections)))})${last.consumer ? `  last round: events ${last.consumer.events} lost ${last.consumer.lost} conntrack ${JSON.stringify(last.consumer.conntrack)}` : ""}`;
  };
  console.log(`loopback churn in a conntrack-tracking namespace, ${seconds} s per run, medians of ${rounds} interleaved rounds, CPU of the churn and tracker processes`);
  console.log(row("baseline", results.baseline));
  console.log(row("conntrack-off", results.off));
  console.log(row("conntrack-on", results.on));
  const ratios = results.on.map((r, i) => perConnection(r) / perConnection(results.off[i]));
  console.log(`ratio on/off ${median(ratios).toFixed(3)}x median (goal <= 1.05x), per round ${ratios.map((x) => x.toFixed(3)).join(", ")}`);
  console.log(`off/baseline ${(median(results.off.map(perConnection)) / median(results.baseline.map(perConnection))).toFixed(2)}x; machine load during the run: ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
} finally {
  try {
    inNs("iptables", "-t", "nat", "-D", "OUTPUT", "-j", "conntrack-CHURN");
    inNs("iptables", "-t", "nat", "-F", "conntrack-CHURN");
    inNs("iptables", "-t", "nat", "-X", "conntrack-CHURN");
  } catch { /* namespace gone */ }
  execFileSync("ip", ["netns", "del", ns]);
}
