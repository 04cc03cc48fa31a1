/**
 * One definition of "open" across sources, Scope's procspy's: ESTABLISHED, FIN_WAIT1, FIN_WAIT2
 * and CLOSE_WAIT. Connections held in each state (and in LAST_ACK and TIME_WAIT, which are not
 * open) go through the eBPF seed, a reconcile, a real close under eBPF, a fallback to /proc and the
 * /proc polls: open ends stay in the table, no reconcile removes them, and their later close is a
 * close of a known connection.
 */
import t from "tap";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../plugin/log.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import { defaultStackConfig, startTrackerStack } from "../../plugin/plugin.ts";
import { scanProc } from "../../plugin/procfs/index.ts";
import { createTestNetwork } from "../helpers/netns.ts";
import { type HeldConnections, type HeldEnd, holdStates } from "../helpers/tcp-states.ts";
import { waitFor } from "../helpers/wait.ts";

const log = createLogger("silent");

const describe = (ends: HeldEnd[]) => ends.map((e) => `${e.state}/${e.side} (${e.kernelState})`);

t.test("half-closed connections are open in both sources and through reconcile and fallback; LAST_ACK and TIME_WAIT are not", async (t) => {
  const net = createTestNetwork("p");
  t.teardown(() => net.destroy());
  const ours = (netns: number) => netns === net.a.netns || netns === net.b.netns;
  const held: HeldConnections[] = [];
  t.teardown(async () => {
    for (const h of held) await h.stop();
  });

  // Before the plugin starts (only the seed can find them), over IPv4.
  const before = await holdStates(net.a, net.b, "ipv4", 7301);
  held.push(before);

  const scanned = new Set((await scanProc({ procRoot: "/proc" })).connections.filter((c) => ours(c.netns)).map(connectionKey));
  t.same(describe(before.ends.filter((e) => e.open !== scanned.has(e.key))), [], "the /proc scan reports exactly the ends in Scope's open states");

  const stopFile = join(mkdtempSync(join(tmpdir(), "parity-open-states-")), "stop");
  // The table tracks the whole host: a cap another test's 100k connections could reach would evict ours.
  const stack = await startTrackerStack({ ...defaultStackConfig, source: "auto", debugBpfStopFile: stopFile, procPollIntervalMs: 500, maxConnections: 1_000_000 }, log);
  t.teardown(() => stack.stop());
  t.equal(stack.supervisor.status().source, "ebpf");
  const closes: string[] = [];
  stack.table.subscribe((change) => {
    if (change.type === "close" && ours(change.connection.netns)) closes.push(connectionKey(change.connection));
  });
  const inTable = (ends: HeldEnd[]) => ends.filter((e) => stack.table.has(e.key));
  const wrong = (ends: HeldEnd[]) => describe(ends.filter((e) => e.open !== stack.table.has(e.key)));

  t.same(wrong(before.ends), [], "the seed took every open end and no other");

  // After the start (eBPF sees every transition), over IPv6.
  const after = await holdStates(net.a, net.b, "ipv6", 7302);
  held.push(after);
  // Every end made after the start that is no longer open was opened and closed as events: wait for
  // each one's close (an open and close in one release reach subscribers together, without the
  // table), or a close still on its way would land in the reconcile's window below (5.10 under TCG).
  const closedAfter = after.ends.filter((e) => !e.open);
  await waitFor("the events of the connections made after the start", () => wrong(after.ends).length === 0 && closedAfter.every((e) => closes.includes(e.key)), 5000).catch(() => undefined);
  t.same(describe(closedAfter.filter((e) => !closes.includes(e.key))), [], "each end made after the start and no longer open was seen closed");
  t.same(wrong(after.ends), [], "eBPF holds every open end and no other: LAST_ACK and the time-wait side are closed");
  const closesBeforeReconcile = closes.length;

  await stack.supervisor.reconcileNow();
  t.same(closes.slice(closesBeforeReconcile), [], "the reconcile removed none of them");
  t.same(wrong([...before.ends, ...after.ends]), [], "after the reconcile: every open end in the table, no other");

  // The real close under eBPF: each open end is closed once, as a known connection.
  const openAfter = after.ends.filter((e) => e.open);
  const closesBeforeRelease = closes.length;
  await after.release();
  await waitFor("the released connections to leave the table", () => inTable(after.ends).length === 0, 5000).catch(() => undefined);
  t.same(describe(inTable(after.ends)), [], "every released end left the table");
  const released = closes.slice(closesBeforeRelease);
  t.same(
    describe(openAfter.filter((e) => released.filter((k) => k === e.key).length !== 1)),
    [],
    "each open end's real close was the close of a known connection, once",
  );

  // Fallback to /proc (the debug kill switch: a restart, then a second death within a minute).
  writeFileSync(stopFile, "");
  await waitFor("a restart", () => stack.supervisor.status().counters.restarts === 1, 5000);
  writeFileSync(stopFile, "");
  await waitFor("the fallback", () => stack.supervisor.status().source === "procfs", 5000);
  const closesBeforePolls = closes.length;
  await new Promise((resolve) => setTimeout(resolve, 1500)); // three /proc polls
  t.same(closes.slice(closesBeforePolls), [], "the /proc polls removed none of them");
  t.same(wrong(before.ends), [], "on /proc: every open end in the table, no other");

  const beforeKeys = new Set(before.ends.map((e) => e.key));
  t.same(closes.filter((k) => beforeKeys.has(k)), [], "nothing closed any of the first connections while they were held (seed, reconcile, restart, fallback)");
  await before.release();
  await waitFor("a /proc poll to see them closed", () => inTable(before.ends).length === 0, 5000).catch(() => undefined);
  t.same(describe(inTable(before.ends)), [], "on /proc, the released ends left the table");
  t.equal(stack.supervisor.status().counters.fallbacks, 1);
});
