/**
 * The supervisor off the happy path, with a FakeTracker standing in for the kernel where the real
 * one cannot be made to fail on demand (a start that fails half-way, a stop that throws, loss in
 * every poll for 10 s): half-started trackers are stopped, deaths are handled and counted, retries
 * back off as configured, sustained loss switches to /proc, --source ebpf never freezes the table.
 * The real deaths are in test/kernel/supervisor.test.ts.
 */
import t from "tap";
import type { EbpfTrackerHooks } from "../../plugin/ebpf/ebpf-tracker.ts";
import type { NativeCounters } from "../../plugin/ebpf/native-addon.ts";
import { createLogger } from "../../plugin/log.ts";
import { type Connection, connectionKey } from "../../plugin/model/connection.ts";
import { heuristicDirection } from "../../plugin/procfs/index.ts";
import { type LiveTracker, Supervisor, type SupervisorOptions } from "../../plugin/supervisor/supervisor.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { waitFor } from "../helpers/wait.ts";

class FakeTracker implements LiveTracker {
  eventsReceived = 0;
  heldBack = 0;
  malformedRecords = 0;
  lateEvents = 0;
  started = false;
  stopped = false;
  counts: NativeCounters = { lost: 0, failedConnects: 0, connectNoPid: 0, acceptNoSock: 0, missed: 0, badSizeRecords: 0 };
  constructor(readonly hooks: EbpfTrackerHooks, readonly behaviour: { failStart?: boolean; failStop?: boolean }) {}
  start(): void {
    if (this.behaviour.failStart) throw Object.assign(new Error("attach refused"), { code: "ERR_BPF_ATTACH" });
    this.started = true;
  }
  stop(): void {
    this.stopped = true;
    if (this.behaviour.failStop) throw new Error("detach blew up");
  }
  flush(): void {}
  counters(): NativeCounters {
    return this.counts;
  }
  attachedPrograms(): string[] {
    return ["fake"];
  }
  lose(count: number): void {
    this.counts = { ...this.counts, lost: this.counts.lost + count };
    this.hooks.onLost(count);
  }
  die(why = "reader thread failed"): void {
    this.hooks.onDead(Object.assign(new Error(why), { code: "ERR_TRACKER_DEAD" }));
  }
  get live(): boolean {
    return this.started && !this.stopped;
  }
}

const conn = (localPort: number): Connection => ({ localAddress: "10.0.0.1", localPort, remoteAddress: "10.0.0.2", remotePort: 80, netns: 1, pid: 0, comm: "", direction: "outgoing", closed: false, source: "procfs" });

interface Rig {
  supervisor: Supervisor;
  table: ConnectionTable;
  trackers: FakeTracker[];
  /** What the next scans return; a function may throw or reject. */
  scanned: { connections: Connection[]; fail: boolean };
  scans: () => number;
  logs: Array<Record<string, unknown>>;
}

function rig(t: { teardown(fn: () => unknown): void }, options: Partial<SupervisorOptions>, behaviours: Array<{ failStart?: boolean; failStop?: boolean }> = []): Rig {
  const trackers: FakeTracker[] = [];
  const table = new ConnectionTable({ maxConnections: 100 });
  const scanned = { connections: [conn(40000)], fail: false };
  let scans = 0;
  const logs: Array<Record<string, unknown>> = [];
  const supervisor = new Supervisor(table, {
    source: "auto",
    kernel: { release: "6.18.0", version: "#1 SMP", btfPresent: true },
    ebpf: { counterPollMs: 20, drainIntervalMs: 1 },
    scan: async () => {
      scans++;
      if (scanned.fail) throw new Error("scan failed half-way");
      return scanned.connections;
    },
    heuristic: heuristicDirection,
    reconcileIntervalMs: 3_600_000,
    procPollIntervalMs: 3_600_000,
    deathWindowMs: 60_000,
    firstRetryMs: 3_600_000,
    maxRetryMs: 3_600_000,
    createTracker: (_table, hooks) => {
      const tracker = new FakeTracker(hooks, behaviours[trackers.length] ?? {});
      trackers.push(tracker);
      return tracker;
    },
    ...options,
  }, createLogger("debug", {}, (line) => logs.push(JSON.parse(line))));
  t.teardown(() => supervisor.stop());
  return { supervisor, table, trackers, scanned, scans: () => scans, logs };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test("a retry whose seed scan fails after the tracker started stops that tracker; the next retry runs one tracker", async (t) => {
  const r = rig(t, { firstRetryMs: 30, maxRetryMs: 30 }, [{ failStart: true }]);
  await r.supervisor.start();
  t.equal(r.supervisor.status().source, "procfs", "the first start failed: /proc");
  r.scanned.fail = true;
  await waitFor("a retry that started a tracker", () => r.trackers.length >= 2, 2000);
  await waitFor("its seed scan to fail", () => r.logs.some((l) => l.msg === "eBPF retry failed"), 2000);
  t.ok(r.trackers[1].stopped, "the half-started tracker was stopped");
  t.match(r.supervisor.status().reason, /last retry failed: .*scan failed half-way/);
  r.scanned.fail = false;
  await waitFor("eBPF back", () => r.supervisor.status().source === "ebpf", 2000);
  t.equal(r.trackers.filter((x) => x.live).length, 1, `exactly one live tracker of ${r.trackers.length} created`);
});

t.test("retry back-off: doubling from firstRetryMs, capped at maxRetryMs", async (t) => {
  const r = rig(t, { firstRetryMs: 10, maxRetryMs: 40 }, Array.from({ length: 50 }, () => ({ failStart: true })));
  await r.supervisor.start();
  await waitFor("six retries", () => r.trackers.length >= 7, 3000);
  const delays = r.logs.filter((l) => l.msg === "eBPF retry scheduled").map((l) => l.inMs).slice(0, 6);
  t.same(delays, [10, 20, 40, 40, 40, 40]);
  t.equal(r.supervisor.status().source, "procfs");
});

t.test("loss in every poll for over 10 s (the default) switches to /proc; under 10 s it does not", async (t) => {
  const clock = { ms: 1_000_000 };
  const r = rig(t, { now: () => clock.ms });
  await r.supervisor.start();
  const tracker = r.trackers[0];
  // One poll per simulated second, each with loss; the real gap between them (5 ms) is well under
  // the 30 ms of quiet (1.5 polls) that would end the episode.
  for (let second = 0; second <= 10; second++) {
    tracker.lose(2);
    clock.ms += 1000;
    await sleep(5);
  }
  t.equal(r.supervisor.status().source, "ebpf", "10 s of loss: still eBPF (the episode has not gone on for over 10 s)");
  tracker.lose(2);
  await waitFor("the switch", () => r.supervisor.status().source === "procfs", 2000);
  t.match(r.supervisor.status().reason, /fell back from eBPF: events lost without pause for over 10000 ms/);
  t.equal(r.supervisor.status().counters.lost, 24);
  t.ok(tracker.stopped);
});

t.test("a death whose handling throws (the tracker's stop fails) is logged and counted, never unhandled", async (t) => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  t.teardown(() => process.off("unhandledRejection", onUnhandled));
  const r = rig(t, {}, [{ failStop: true }]);
  await r.supervisor.start();
  r.trackers[0].die();
  await waitFor("the restart", () => r.trackers.length === 2 && r.supervisor.status().source === "ebpf" && r.supervisor.status().counters.restarts === 1, 2000);
  await sleep(20);
  t.same(unhandled, [], "no unhandled rejection");
  t.equal(r.supervisor.status().counters.internalErrors, 1, "the failed stop is counted");
  t.ok(r.logs.some((l) => l.msg === "stopping the tracker failed" && String(l.error).includes("detach blew up")), "and logged");
});

t.test("a tracker hook that throws is reported through onInternalError, counted", async (t) => {
  const r = rig(t, {});
  await r.supervisor.start();
  r.trackers[0].hooks.onInternalError!("onLost", new Error("boom"));
  t.equal(r.supervisor.status().counters.internalErrors, 1);
});

t.test("--source ebpf after deaths: /proc keeps the table honest meanwhile, eBPF is back within the short back-off", async (t) => {
  const r = rig(t, { source: "ebpf", requiredRetryFirstMs: 50, requiredRetryMaxMs: 200, procPollIntervalMs: 20 }, [{}, {}, { failStart: true }]);
  await r.supervisor.start();
  r.scanned.connections = [conn(40000), conn(40001)];
  await r.supervisor.reconcileNow();
  t.equal(r.table.size, 2);
  r.trackers[0].die();
  await waitFor("the immediate restart", () => r.trackers.length === 2 && r.supervisor.status().counters.restarts === 1, 2000);
  r.trackers[1].die(); // a second death within the window: no immediate restart
  await waitFor("the stopgap", () => r.supervisor.status().source === "procfs", 2000);
  t.match(r.supervisor.status().reason, /eBPF required \(--source ebpf\) but down, \/proc scans keep the table until it is back \(next restart in 50 ms\): died twice within 60000 ms/);
  // A connection closes while eBPF is down: the /proc polls see it go.
  r.scanned.connections = [conn(40000)];
  await waitFor("the close seen by a /proc poll", () => !r.table.has(connectionKey(conn(40001))), 2000);
  t.equal(r.supervisor.status().counters.fallbacks, 0, "not counted as a fallback: eBPF is still the source asked for");
  // The first restart (tracker 3) fails to start; the second (tracker 4) comes back.
  await waitFor("eBPF back", () => r.supervisor.status().source === "ebpf", 3000);
  const scheduled = r.logs.filter((l) => l.msg === "eBPF retry scheduled").map((l) => l.inMs);
  t.same(scheduled, [50, 100], "restarts after 50 then 100 ms (doubling), not minutes");
  t.equal(r.trackers.filter((x) => x.live).length, 1);
  t.equal(r.supervisor.status().counters.restarts, 2);
});

t.test("kernel counters the addon exports reach status: acceptNoSock, connectNoPid, late events", async (t) => {
  const r = rig(t, {});
  await r.supervisor.start();
  r.trackers[0].counts = { ...r.trackers[0].counts, acceptNoSock: 3, connectNoPid: 4 };
  r.trackers[0].lateEvents = 5;
  t.match(r.supervisor.status().counters, { acceptNoSock: 3, connectNoPid: 4, lateEvents: 5 });
  r.trackers[0].die();
  await waitFor("the restart", () => r.trackers.length === 2 && r.supervisor.status().source === "ebpf", 2000);
  t.match(r.supervisor.status().counters, { acceptNoSock: 3, connectNoPid: 4, lateEvents: 5 }, "kept across a restart");
});
