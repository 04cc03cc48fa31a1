/**
 * The supervisor's answer to kernel loss counters: skipped program runs are healed and never leave
 * eBPF; ring-buffer loss twice within the window does. The real tracker cannot be made to skip on
 * demand (that takes a softirq landing inside a BPF run), so a FakeTracker stands in for it here:
 * it moves the counters the way the kernel would and nothing else. The real overflow path is in
 * test/kernel/supervisor.test.ts.
 */
import t from "tap";
import type { EbpfTrackerHooks } from "../../plugin/ebpf/ebpf-tracker.ts";
import type { NativeCounters } from "../../plugin/ebpf/native-addon.ts";
import { createLogger } from "../../plugin/log.ts";
import type { Connection } from "../../plugin/model/connection.ts";
import { heuristicDirection } from "../../plugin/procfs/index.ts";
import type { ProgramAttachment } from "../../plugin/model/status.ts";
import { defaultPolicy, type LiveTracker, Supervisor } from "../../plugin/supervisor/supervisor.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { waitFor } from "../helpers/wait.ts";

class FakeTracker implements LiveTracker {
  eventsReceived = 0;
  heldBack = 0;
  malformedRecords = 0;
  stopped = false;
  #counters: NativeCounters = { lost: 0, failedConnects: 0, connectNoPid: 0, acceptNoSock: 0, missed: 0, badSizeRecords: 0 };
  constructor(readonly hooks: EbpfTrackerHooks) {}
  start(): void {}
  stop(): void {
    this.stopped = true;
  }
  flush(): void {}
  counters(): NativeCounters {
    return this.#counters;
  }
  attachedPrograms(): string[] {
    return ["fake"];
  }
  attachments(): ProgramAttachment[] {
    return [];
  }
  /** What one counter poll would report. */
  skip(count: number): void {
    this.#counters = { ...this.#counters, missed: this.#counters.missed + count };
    this.hooks.onSkipped(count);
  }
  lose(count: number): void {
    this.#counters = { ...this.#counters, lost: this.#counters.lost + count };
    this.hooks.onLost(count);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function supervised(t: { teardown(fn: () => unknown): void }, skipHealSpacingMs: number) {
  const trackers: FakeTracker[] = [];
  let scans = 0;
  const open: Connection = { localAddress: "10.0.0.1", localPort: 40000, remoteAddress: "10.0.0.2", remotePort: 80, netns: 1, pid: 0, comm: "", direction: "unknown", closed: false, source: "procfs" };
  const supervisor = new Supervisor(new ConnectionTable({ maxConnections: 100 }), {
    source: "auto",
    kernel: { release: "6.18.0", version: "#1 SMP", btfPresent: true },
    ebpf: { counterPollMs: 20, drainIntervalMs: 1 },
    scan: async () => (scans++, [open]),
    heuristic: heuristicDirection,
    reconcileIntervalMs: 3_600_000,
    procPollIntervalMs: 3_600_000,
    deathWindowMs: 60_000,
    firstRetryMs: 3_600_000,
    maxRetryMs: defaultPolicy.maxRetryMs,
    skipHealSpacingMs,
    createTracker: (_table, hooks) => {
      const tracker = new FakeTracker(hooks);
      trackers.push(tracker);
      return tracker;
    },
  }, createLogger("silent"));
  await supervisor.start();
  t.teardown(() => supervisor.stop());
  return { supervisor, trackers, scans: () => scans };
}

t.test("skipped program runs in every poll for a while: counted, healed by spaced reconciles, eBPF stays live", async (t) => {
  const { supervisor, trackers, scans } = await supervised(t, 200);
  t.equal(trackers.length, 1);
  const seedScans = scans();
  const startedMs = Date.now();
  for (let i = 0; i < 30; i++) {
    trackers[0].skip(3);
    await sleep(20);
  }
  await waitFor("the last heal", () => scans() > seedScans && supervisor.status().counters.skipped === 90, 2000);
  await sleep(300);
  const elapsedMs = Date.now() - startedMs;
  const status = supervisor.status();
  t.equal(status.source, "ebpf", `still eBPF (${status.reason})`);
  t.equal(status.counters.skipped, 90, "every skipped run counted");
  t.equal(status.counters.lost, 0, "skips are not ring-buffer loss");
  t.equal(status.counters.fallbacks + status.counters.restarts, 0);
  t.equal(trackers.length, 1, "the tracker was never restarted");
  const heals = scans() - seedScans;
  const spacedAtMost = Math.ceil(elapsedMs / 200) + 1;
  t.ok(heals >= 1 && heals <= spacedAtMost, `30 polls with skips over ${elapsedMs} ms healed by ${heals} reconciles, at most one per 200 ms (${spacedAtMost}), not one per poll`);
});

t.test("skips survive a stop into status: a stopped tracker's counts are kept", async (t) => {
  const { supervisor, trackers } = await supervised(t, 10_000);
  trackers[0].skip(7);
  trackers[0].malformedRecords = 2;
  await supervisor.stop();
  t.match(supervisor.status().counters, { skipped: 7, malformedRecords: 2 });
});

t.test("ring-buffer loss in two episodes within the window: /proc takes over, saying why", async (t) => {
  const { supervisor, trackers } = await supervised(t, 10_000);
  trackers[0].lose(5);
  await sleep(100); // quiet for longer than 1.5 polls: the episode ends and is healed
  t.equal(supervisor.status().source, "ebpf", "one episode is healed, not fatal");
  trackers[0].lose(1);
  await waitFor("the switch to /proc", () => supervisor.status().source === "procfs", 2000);
  t.match(supervisor.status().reason, /events lost twice within 60000 ms/);
  t.ok(trackers[0].stopped, "the tracker was stopped");
  t.equal(supervisor.status().counters.lost, 6);
});
