/**
 * The supervisor's policy on the real kernel: refusal up front, loss healing, overflow fallback,
 * the debug kill switch, and start-up under load. No open connection may disappear across switches.
 */
import t from "tap";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { defaultObjectPath } from "../../plugin/ebpf/native-addon.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../plugin/log.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import { defaultStackConfig, scanProcForSupervisor } from "../../plugin/plugin.ts";
import { heuristicDirection } from "../../plugin/procfs/index.ts";
import { readKernelFacts } from "../../plugin/supervisor/kernel-support.ts";
import { Supervisor } from "../../plugin/supervisor/supervisor.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { bothEndsKeys, networkFor, peerFor, stackFor, type Tap } from "../helpers/kernel-stack.ts";
import type { TestNetwork } from "../helpers/netns.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { establishedKeys } from "../helpers/sock-diag.ts";
import { timeScale, waitFor } from "../helpers/wait.ts";

const log = createLogger("silent");


const network = (t: Tap): TestNetwork => networkFor(t, "s");

const peer = peerFor;

/** Opens `count` long-lived connections b -> a and returns the keys of both ends. */
async function holdConnections(t: Tap, net: TestNetwork, port: number, count: number): Promise<string[]> {
  await peer(t, startServer(net.a.name, net.a.ipv4, port, "hold"));
  const client = await peer(t, startClient(net.b.name, net.a.ipv4, port, count, true));
  return bothEndsKeys(net, net.a.ipv4, port, (await client.linesUntil("done")).map(Number));
}

async function burst(t: Tap, net: TestNetwork, port: number, count: number): Promise<void> {
  await peer(t, startServer(net.a.name, net.a.ipv4, port, "close"));
  const client = await peer(t, startClient(net.b.name, net.a.ipv4, port, count, false));
  await client.linesUntil("done");
}

for (const [release, version, why] of [
  ["4.3.0", "#1 SMP", /older than 4\.4/],
  ["4.4.0-121-generic", "#145-Ubuntu SMP Fri Apr 13 13:47:23 UTC 2018", /denylisted.*scope#3131/],
] as const) {
  t.test(`kernel ${release} is refused up front and /proc is live, saying why`, async (t) => {
    const stack = await stackFor(t, { source: "auto", kernelOverride: { release, version } });
    const status = stack.supervisor.status();
    t.equal(status.source, "procfs");
    t.match(status.reason, /eBPF refused up front: ERR_KERNEL_UNSUPPORTED/);
    t.match(status.reason, why);
  });
}

t.test("ring-buffer overflow: counted, healed by a reconcile of its own, a second one within a minute switches to /proc, nothing open lost", async (t) => {
  const net = network(t);
  const held = await holdConnections(t, net, 7001, 20);
  // The periodic reconcile is an hour away: only the loss healing can reconcile in this test.
  // A 4 KiB ring (46 records) overflows when a burst outruns its drain. An emulated CPU (scripts/vm/)
  // makes connections ~10x slower, so there the drain is as many times slower and the burst as
  // many times shorter: it still overflows, and still ends inside the 10 s after which loss counts
  // as sustained. On hardware (scale 1): 3,000 connections against a 20 ms drain.
  const overflowBurst = Math.round(3000 / timeScale);
  const stack = await stackFor(t, { source: "auto", ringBufferBytes: 4096, drainIntervalMs: 20 * timeScale, procPollIntervalMs: 500, reconcileIntervalMs: 3_600_000 });
  t.equal(stack.supervisor.status().source, "ebpf");
  await waitFor("the held connections seeded", () => held.every((k) => stack.table.has(k)));

  await burst(t, net, 7002, overflowBurst);
  await waitFor("the first loss counted", () => stack.supervisor.status().counters.lost > 0, 5000);
  let lastLost = -1;
  await waitFor("the loss episode to end (no loss in a counter poll)", () => {
    const lost = stack.supervisor.status().counters.lost;
    return lost === lastLost || ((lastLost = lost), false);
  }, 10_000, 1600);
  t.equal(stack.supervisor.status().source, "ebpf", "one loss is healed, not fatal");
  await waitFor("the healing reconcile, started by the supervisor itself", () => stack.supervisor.status().counters.reconciles >= 1, 10_000);
  const afterHeal = [...stack.table.values()].filter((c) => c.netns === net.a.netns || c.netns === net.b.netns).map(connectionKey).sort();
  const kernel = [...establishedKeys(net.a.name, net.a.netns), ...establishedKeys(net.b.name, net.b.netns)].sort();
  t.same(afterHeal, kernel, "after the heal the table equals the kernel's own view (ss): no ghost of the burst, nothing missing");
  t.ok(held.every((k) => stack.table.has(k)), "held connections still open after the first loss");

  await burst(t, net, 7003, overflowBurst);
  await waitFor("the switch to /proc", () => stack.supervisor.status().source === "procfs", 10_000);
  const status = stack.supervisor.status();
  t.match(status.reason, /fell back from eBPF: .*events lost twice/);
  t.equal(status.counters.fallbacks, 1);
  t.ok(held.every((k) => stack.table.has(k)), "held connections survived the switch");
  await new Promise((r) => setTimeout(r, 1200)); // two /proc polls
  t.ok(held.every((k) => stack.table.has(k)), "and the /proc polls that follow");
  const leftovers = [...stack.table.values()].filter((c) => c.localPort === 7002 || c.remotePort === 7002 || c.localPort === 7003 || c.remotePort === 7003);
  t.equal(leftovers.length, 0, "no ghost of the bursts after /proc took over");
});

t.test("the debug kill switch goes through the same restart/fallback policy as a real death", async (t) => {
  const net = network(t);
  const held = await holdConnections(t, net, 7011, 5);
  const stopFile = join(mkdtempSync(join(tmpdir(), "kill-")), "stop");
  const stack = await stackFor(t, { source: "auto", debugBpfStopFile: stopFile, procPollIntervalMs: 500 });
  await waitFor("seeded", () => held.every((k) => stack.table.has(k)));

  writeFileSync(stopFile, "");
  await waitFor("a restart", () => stack.supervisor.status().counters.restarts === 1, 5000);
  let status = stack.supervisor.status();
  t.equal(status.source, "ebpf", "the first death restarts eBPF");
  t.match(status.reason, /restarted after death: ERR_TRACKER_DEAD: killed on purpose/);
  t.ok(held.every((k) => stack.table.has(k)), "nothing open lost across the restart");

  writeFileSync(stopFile, "");
  await waitFor("the fallback", () => stack.supervisor.status().source === "procfs", 5000);
  status = stack.supervisor.status();
  t.match(status.reason, /died twice within/);
  t.equal(status.counters.fallbacks, 1);
  t.ok(held.every((k) => stack.table.has(k)), "nothing open lost across the fallback");
});

t.test("--source ebpf, two real deaths within a minute: /proc keeps the table honest, eBPF is back within seconds", async (t) => {
  const net = network(t);
  const held = await holdConnections(t, net, 7031, 5);
  const stopFile = join(mkdtempSync(join(tmpdir(), "robust-kill-")), "stop");
  // The restart is 8 s away: time enough, on a loaded machine, to start a peer while eBPF is down.
  const stack = await stackFor(t, { source: "ebpf", debugBpfStopFile: stopFile, procPollIntervalMs: 200, requiredRetryMs: 8000 });
  await waitFor("seeded", () => held.every((k) => stack.table.has(k)));
  await peer(t, startServer(net.a.name, net.a.ipv4, 7032, "hold"));
  await peer(t, startServer(net.a.name, net.a.ipv4, 7033, "hold"));
  const closing = await peer(t, startClient(net.b.name, net.a.ipv4, 7032, 1, true));
  const closingPort = Number(await closing.line());
  const closingKey = connectionKey({ netns: net.b.netns, localAddress: net.b.ipv4, localPort: closingPort, remoteAddress: net.a.ipv4, remotePort: 7032 });
  await waitFor("the connection that will close", () => stack.table.has(closingKey));
  writeFileSync(stopFile, "");
  // A restart seeds from a full /proc scan: seconds on a host busy with other tests' connections.
  await waitFor("the immediate restart", () => stack.supervisor.status().counters.restarts === 1, 20_000);
  writeFileSync(stopFile, "");
  await waitFor("the stopgap", () => stack.supervisor.status().source === "procfs", 20_000);
  const down = stack.supervisor.status();
  t.match(down.reason, /eBPF required \(--source ebpf\) but down, \/proc scans keep the table until it is back \(next restart in 8000 ms\): died twice within 60000 ms: ERR_TRACKER_DEAD: killed on purpose/);
  // While eBPF is down a connection closes (its process is killed) and one opens: the /proc polls see both.
  await closing.stop();
  const opener = await peer(t, startClient(net.b.name, net.a.ipv4, 7033, 1, true));
  const freshPort = Number(await opener.line());
  const fresh = [connectionKey({ netns: net.b.netns, localAddress: net.b.ipv4, localPort: freshPort, remoteAddress: net.a.ipv4, remotePort: 7033 })];
  let seenWhile = "";
  await waitFor("the close and the open seen by /proc polls", () => {
    seenWhile = stack.supervisor.status().source;
    return !stack.table.has(closingKey) && fresh.every((k) => stack.table.has(k));
  }, 7000);
  t.equal(seenWhile, "procfs", "seen while eBPF was still down");
  await waitFor("eBPF back after the back-off", () => stack.supervisor.status().source === "ebpf", 25_000);
  const back = stack.supervisor.status();
  t.match(back.reason, /eBPF retried after 8000 ms back-off and came back/);
  t.equal(back.counters.restarts, 2);
  t.equal(back.counters.fallbacks, 0);
  t.ok([...held, ...fresh].every((k) => stack.table.has(k)), "nothing open lost across the deaths");
});

t.test("start-up under churn, connections opened while the seed scan runs: the table equals the kernel's own view (ss), nothing lost, nothing healed", async (t) => {
  const net = network(t);
  const held = await holdConnections(t, net, 7021, 30);
  await peer(t, startServer(net.a.name, net.a.ipv4, 7022, "close"));
  // About 200 connections/s opening and closing while the plugin starts.
  const churn = await peer(t, startClient(net.b.name, net.a.ipv4, 7022, 100_000, false, 200));
  await churn.line();
  let duringPorts: number[] = [];
  let seeded = false;
  const table = new ConnectionTable({ maxConnections: 65_536 });
  const supervisor = new Supervisor(table, {
    source: "ebpf",
    kernel: readKernelFacts("/proc", defaultStackConfig.btfPath),
    ebpf: {},
    // The seed scan, hooked: 10 more connections open at 50/s while it reads /proc (some before it
    // reaches their namespace, some after), and it returns only once all 10 are open.
    scan: async (signal) => {
      if (seeded) return scanProcForSupervisor("/proc", signal);
      seeded = true;
      const during = await peer(t, startClient(net.b.name, net.a.ipv4, 7021, 10, true, 50));
      const first = Number(await during.line());
      const scanning = scanProcForSupervisor("/proc", signal);
      duringPorts = [first, ...(await during.linesUntil("done")).map(Number)];
      return scanning;
    },
    heuristic: heuristicDirection,
    reconcileIntervalMs: 3_600_000,
    procPollIntervalMs: 3_600_000,
    deathWindowMs: 60_000,
    firstRetryMs: 3_600_000,
    maxRetryMs: 3_600_000,
  }, log);
  t.teardown(() => supervisor.stop());
  await supervisor.start();
  t.equal(duringPorts.length, 10, "10 connections opened during the seed scan");
  await new Promise((r) => setTimeout(r, 500));
  await churn.stop();
  // The last closes pass the 50 ms hold-back window; the churn's sockets leave ESTABLISHED at once.
  await new Promise((r) => setTimeout(r, 300 * timeScale));

  const inTest = (netns: number) => netns === net.a.netns || netns === net.b.netns;
  const kernel = [...establishedKeys(net.a.name, net.a.netns), ...establishedKeys(net.b.name, net.b.netns)].sort();
  const tracked = [...table.values()].filter((c) => inTest(c.netns)).map(connectionKey).sort();
  const status = supervisor.status();
  t.equal(status.source, "ebpf", `eBPF stayed live (${status.reason})`);
  t.equal(status.counters.lost, 0, "no event lost");
  t.same(tracked, kernel, "the table equals ss's established connections in the test namespaces", {
    missing: kernel.filter((k) => !tracked.includes(k)),
    ghosts: tracked.filter((k) => !kernel.includes(k)),
  });
  t.equal(status.counters.reconcileAdded + status.counters.reconcileRemoved, 0, `no reconcile corrected anything (skipped runs: ${status.counters.skipped}, reconciles: ${status.counters.reconciles})`);
  t.ok(held.every((k) => tracked.includes(k)), "every connection that lived through the start is there");
  const duringKeys = bothEndsKeys(net, net.a.ipv4, 7021, duringPorts);
  t.ok(duringKeys.every((k) => tracked.includes(k)), "the 10 opened during the seed scan are there, both ends", { missing: duringKeys.filter((k) => !tracked.includes(k)) });
});

t.test("an object built from another tracker.h (real, padded records): the tracker dies saying so, /proc takes over, no restart", async (t) => {
  const padded = join(defaultObjectPath, "..", "test", "tracker-record-pad.bpf.o");
  t.ok(existsSync(padded), `${padded} is built by scripts/build-bpf.sh`);
  const t0 = Date.now();
  const net = network(t);
  const held = await holdConnections(t, net, 7041, 3);
  t.comment(`network and held connections in ${Date.now() - t0} ms`);
  const table = new ConnectionTable({ maxConnections: 65_536 });
  const supervisor = new Supervisor(table, {
    source: "auto",
    kernel: readKernelFacts("/proc", defaultStackConfig.btfPath),
    ebpf: { objectPath: padded, counterPollMs: 100 },
    scan: (signal) => scanProcForSupervisor("/proc", signal),
    heuristic: heuristicDirection,
    reconcileIntervalMs: 3_600_000,
    procPollIntervalMs: 500,
    deathWindowMs: 60_000,
    firstRetryMs: 3_600_000,
    maxRetryMs: 3_600_000,
  }, log);
  t.teardown(() => supervisor.stop());
  await supervisor.start();
  t.comment(`started ${Date.now() - t0} ms after the test began: ${supervisor.status().source}, ${supervisor.status().reason}`);
  // Any TCP traffic on the host makes records; ours for certain.
  await burst(t, net, 7042, 20);
  await waitFor("the fallback", () => supervisor.status().source === "procfs", 10_000);
  t.comment(`fell back ${Date.now() - t0} ms after the test began`);
  const status = supervisor.status();
  t.match(status.reason, /ERR_TRACKER_MISMATCH: \d+ ring-buffer records of the wrong size \(expected 80 bytes\).*rebuild both/);
  t.ok(status.counters.badSizeRecords > 0, `badSizeRecords ${status.counters.badSizeRecords}`);
  t.equal(status.counters.restarts, 0, "not restarted: the same build would die alike");
  t.equal(status.counters.fallbacks, 1);
  t.ok(held.every((k) => table.has(k)), "the held connections are tracked by /proc");
});
