/**
 * The supervisor's policy on the real kernel: refusal up front, loss healing, overflow fallback,
 * the debug kill switch, and start-up under load. No open connection may disappear across switches.
 */
import t from "tap";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../plugin/log.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import { defaultStackConfig, startTrackerStack, type StackConfig, type TrackerStack } from "../../plugin/plugin.ts";
import { scanProc } from "../../plugin/procfs/index.ts";
import { createTestNetwork, type TestNetwork } from "../helpers/netns.ts";
import { type Peer, startClient, startServer } from "../helpers/peers.ts";
import { timeScale, waitFor } from "../helpers/wait.ts";

const log = createLogger("silent");

type Tap = { teardown(fn: () => unknown): void };

async function stackFor(t: Tap, config: Partial<StackConfig>): Promise<TrackerStack> {
  const stack = await startTrackerStack({ ...defaultStackConfig, ...config }, log);
  t.teardown(() => stack.stop());
  return stack;
}

function network(t: Tap): TestNetwork {
  const net = createTestNetwork("s");
  t.teardown(() => net.destroy());
  return net;
}

async function peer(t: Tap, started: Peer | Promise<Peer>): Promise<Peer> {
  const p = await started;
  t.teardown(() => p.stop());
  return p;
}

/** Opens `count` long-lived connections b -> a and returns the keys of both ends. */
async function holdConnections(t: Tap, net: TestNetwork, port: number, count: number): Promise<string[]> {
  await peer(t, startServer(net.a.name, net.a.ipv4, port, "hold"));
  const client = await peer(t, startClient(net.b.name, net.a.ipv4, port, count, true));
  const ports = (await client.linesUntil("done")).map(Number);
  return ports.flatMap((p) => [
    connectionKey({ netns: net.b.netns, localAddress: net.b.ipv4, localPort: p, remoteAddress: net.a.ipv4, remotePort: port }),
    connectionKey({ netns: net.a.netns, localAddress: net.a.ipv4, localPort: port, remoteAddress: net.b.ipv4, remotePort: p }),
  ]);
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

t.test("ring-buffer overflow: counted, healed by reconcile, a second one within a minute switches to /proc, nothing open lost", async (t) => {
  const net = network(t);
  const held = await holdConnections(t, net, 7001, 20);
  // A 4 KiB ring (46 records) overflows when a burst outruns its drain. An emulated CPU (scripts/vm/)
  // makes connections ~10x slower, so there the drain is as many times slower and the burst as
  // many times shorter: it still overflows, and still ends inside the 10 s after which loss counts
  // as sustained. On hardware (scale 1): 3,000 connections against a 20 ms drain.
  const overflowBurst = Math.round(3000 / timeScale);
  const stack = await stackFor(t, { source: "auto", ringBufferBytes: 4096, drainIntervalMs: 20 * timeScale, procPollIntervalMs: 500 });
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
  await stack.supervisor.reconcileNow(); // queued behind the healing reconcile
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

t.test("start-up under load: after settling the table matches the kernel's view, no gap, no ghost", async (t) => {
  const net = network(t);
  const held = await holdConnections(t, net, 7021, 30);
  await peer(t, startServer(net.a.name, net.a.ipv4, 7022, "close"));
  // About 200 connections/s opening and closing while the plugin starts.
  const churn = await peer(t, startClient(net.b.name, net.a.ipv4, 7022, 100_000, false, 200));
  await churn.line();
  const t0 = Date.now();
  const stack = await stackFor(t, { source: "auto" });
  t.comment(`started in ${Date.now() - t0} ms`);
  const during = await peer(t, startClient(net.b.name, net.a.ipv4, 7021, 10, true));
  const duringPorts = (await during.linesUntil("done")).map(Number);
  await new Promise((r) => setTimeout(r, 1000));
  await churn.stop();

  // Settling: the last closes pass the hold-back window and the churn's sockets leave the kernel.
  const inTestNamespaces = (netns: number) => netns === net.a.netns || netns === net.b.netns;
  let kernel: string[] = [];
  let table: string[] = [];
  const settleBy = Date.now() + 5000 * timeScale;
  do {
    await new Promise((r) => setTimeout(r, 200));
    kernel = (await scanProc({ procRoot: "/proc" })).connections.filter((c) => inTestNamespaces(c.netns)).map(connectionKey).sort();
    table = [...stack.table.values()].filter((c) => inTestNamespaces(c.netns)).map(connectionKey).sort();
  } while (JSON.stringify(table) !== JSON.stringify(kernel) && Date.now() < settleBy);
  const status = stack.supervisor.status();
  t.equal(status.source, "ebpf", `eBPF stayed live (${status.reason}; lost ${status.counters.lost}, skipped ${status.counters.skipped})`);
  t.same(table, kernel, "the table equals the kernel's established connections in the test namespaces", {
    missing: kernel.filter((k) => !table.includes(k)),
    stale: table.filter((k) => !kernel.includes(k)),
  });
  t.ok(held.every((k) => table.includes(k)), "every connection that lived through the start is there");
  t.equal(table.filter((k) => duringPorts.some((p) => k.includes(`|${p}|`) || k.endsWith(`|${p}`))).length, 20, "connections opened during start-up are there once each");
});
