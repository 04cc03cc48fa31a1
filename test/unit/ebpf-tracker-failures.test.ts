/**
 * The tracker's failure paths that the real addon cannot be made to take on demand: records of the
 * wrong size (an addon and object built from different headers), a counters read that throws, and
 * the fd walk's choice when the addon does not load. A stand-in addon (a plain JS module loaded
 * through the same loader, named as the fake it is) reports what a mismatched build would.
 */
import t from "tap";
import { EbpfTracker } from "../../plugin/ebpf/ebpf-tracker.ts";
import { EVENT_SIZE } from "../../plugin/ebpf/record.ts";
import { createLogger } from "../../plugin/log.ts";
import { heuristicDirection } from "../../plugin/procfs/index.ts";
import { chooseFdWalk } from "../../plugin/procfs/fd-walk.ts";
import { Supervisor } from "../../plugin/supervisor/supervisor.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { waitFor } from "../helpers/wait.ts";
import { behaviour, fakeAddon } from "../helpers/fake-addon.ts";


t.test("records of the wrong size counted by the addon: the tracker dies with a reason that says what to do", async (t) => {
  const b = behaviour({});
  const deaths: Error[] = [];
  const tracker = new EbpfTracker(new ConnectionTable({ maxConnections: 10 }), { onLost() {}, onSkipped() {}, onDead: (e) => deaths.push(e) }, { addonPath: fakeAddon(t), counterPollMs: 10 });
  tracker.start();
  t.teardown(() => tracker.stop());
  b.counters = { badSizeRecords: 12 };
  await waitFor("the death", () => deaths.length > 0, 2000);
  t.match(deaths[0], { code: "ERR_TRACKER_MISMATCH", message: /12 ring-buffer records of the wrong size.*different versions of bpf\/tracker\.h.*scripts\/setup\.sh/ });
  t.equal(tracker.badSizeRecords, 12);
});

t.test("a batch that is not a whole number of records is the same failure, found on our side", async (t) => {
  const b = behaviour({});
  const deaths: Error[] = [];
  const tracker = new EbpfTracker(new ConnectionTable({ maxConnections: 10 }), { onLost() {}, onSkipped() {}, onDead: (e) => deaths.push(e) }, { addonPath: fakeAddon(t), counterPollMs: 10 });
  tracker.start();
  t.teardown(() => tracker.stop());
  b.options!.onBatch(new Uint8Array(EVENT_SIZE + 8));
  await waitFor("the death", () => deaths.length > 0, 2000);
  t.match(deaths[0], { code: "ERR_TRACKER_MISMATCH" });
});

t.test("a counters read that throws kills the tracker with the reason, no uncaught exception", async (t) => {
  const b = behaviour({});
  const deaths: Error[] = [];
  const tracker = new EbpfTracker(new ConnectionTable({ maxConnections: 10 }), { onLost() {}, onSkipped() {}, onDead: (e) => deaths.push(e) }, { addonPath: fakeAddon(t), counterPollMs: 10 });
  tracker.start();
  t.teardown(() => tracker.stop());
  b.countersThrow = true;
  await waitFor("the death", () => deaths.length > 0, 2000);
  t.match(deaths[0], { code: "ERR_TRACKER_DEAD", message: /reading the kernel counters failed: bpf_map_lookup_elem: EBADF/ });
});

t.test("a hook that throws from the counters poll goes to onInternalError, the poll goes on", async (t) => {
  const b = behaviour({});
  const internal: string[] = [];
  let polls = 0;
  const tracker = new EbpfTracker(new ConnectionTable({ maxConnections: 10 }), {
    onLost() {
      polls++;
      throw new Error("hook bug");
    },
    onSkipped() {},
    onDead() {},
    onInternalError: (what) => internal.push(what),
  }, { addonPath: fakeAddon(t), counterPollMs: 10 });
  tracker.start();
  t.teardown(() => tracker.stop());
  b.counters = { lost: 1 };
  await waitFor("the hook's failure", () => internal.length > 0, 2000);
  b.counters = { lost: 2 };
  await waitFor("a second poll", () => polls >= 2, 2000);
  t.same(internal.slice(0, 2), ["onLost", "onLost"]);
});

t.test("under the supervisor, a mismatched build is a death with that reason and a fallback, not a restart", async (t) => {
  behaviour({ counters: { badSizeRecords: 3 } });
  const addonPath = fakeAddon(t);
  const supervisor = new Supervisor(new ConnectionTable({ maxConnections: 10 }), {
    source: "auto",
    kernel: { release: "6.18.0", version: "#1 SMP", btfPresent: true },
    ebpf: { addonPath, counterPollMs: 10, drainIntervalMs: 1 },
    scan: async () => [],
    heuristic: heuristicDirection,
    reconcileIntervalMs: 3_600_000,
    procPollIntervalMs: 3_600_000,
    deathWindowMs: 60_000,
    firstRetryMs: 3_600_000,
    maxRetryMs: 3_600_000,
  }, createLogger("silent"));
  t.teardown(() => supervisor.stop());
  await supervisor.start();
  await waitFor("the fallback", () => supervisor.status().source === "procfs", 2000);
  const status = supervisor.status();
  t.match(status.reason, /fell back.*ERR_TRACKER_MISMATCH: 3 ring-buffer records of the wrong size/);
  t.equal(status.counters.restarts, 0, "not restarted: it would die alike");
  t.equal(status.counters.badSizeRecords, 3);
});

t.test("the fd walk: the native one when the addon loads, else the JS one with the reason (never silently)", async (t) => {
  const native = chooseFdWalk(() => ({ socketInodes: () => ({ inodes: new Float64Array(0) }) }));
  t.equal(native.walker.kind, "native");
  const failed = chooseFdWalk(() => {
    throw Object.assign(new Error("undefined symbol: bpf_object__open_file"), { code: "ERR_BPF_ADDON" });
  });
  t.equal(failed.walker.kind, "js");
  t.match(failed.reason, /JS fd walk \(slower\): the native one failed to load: ERR_BPF_ADDON: undefined symbol/);
  const old = chooseFdWalk(() => ({}) as never);
  t.match(old.reason, /predates socketInodes/);
});
