/**
 * The tracker's timers on an idle host: the hold-back window's release timer runs only while
 * records are held, so a tracker with nothing to apply keeps no timer firing every drain interval
 * (with the addon's reader asleep in epoll, that is what made an idle plugin cost a few tenths of a
 * percent of a core). Driven through the FAKE addon (test/helpers/fake-addon.ts), which hands the
 * tracker batches as the real one does.
 */
import t from "tap";
import { EbpfTracker } from "../../plugin/ebpf/ebpf-tracker.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { behaviour, fakeAddon } from "../helpers/fake-addon.ts";
import { encodeRecords } from "../helpers/records.ts";
import { waitFor } from "../helpers/wait.ts";

const DRAIN_MS = 20;
const realSetTimeout = globalThis.setTimeout;
const sleep = (ms: number) => new Promise<void>((resolve) => realSetTimeout(resolve, ms));

/** Counts the timers (one-shot or repeating) armed with the drain interval, still arming them. */
function countDrainTimers(t: { teardown(fn: () => void): void }): { armed: number } {
  const counter = { armed: 0 };
  const realSetInterval = globalThis.setInterval;
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    if (ms === DRAIN_MS) counter.armed++;
    return realSetTimeout(fn, ms);
  }) as typeof setTimeout;
  globalThis.setInterval = ((fn: () => void, ms?: number) => {
    if (ms === DRAIN_MS) counter.armed++;
    return realSetInterval(fn, ms);
  }) as typeof setInterval;
  t.teardown(() => {
    globalThis.setTimeout = realSetTimeout;
    globalThis.setInterval = realSetInterval;
  });
  return counter;
}

t.test("the release timer is armed while records are held, and gone once they are applied", async (t) => {
  const b = behaviour({});
  const table = new ConnectionTable({ maxConnections: 10 });
  const tracker = new EbpfTracker(table, { onLost() {}, onSkipped() {}, onDead() {} }, { addonPath: fakeAddon(t), drainIntervalMs: DRAIN_MS, counterPollMs: 60_000 });
  const timers = countDrainTimers(t);
  tracker.start();
  t.teardown(() => tracker.stop());
  await sleep(200);
  t.equal(timers.armed, 0, "started with nothing received: no release timer in 200 ms (10 drain intervals)");

  const now = Number(process.hrtime.bigint());
  for (const [i, port] of [40001, 40002].entries()) {
    b.options!.onBatch(encodeRecords([{ type: "connect", timestampNs: now + i, localPort: port }]));
    t.equal(timers.armed, 1, `records held after batch ${i + 1}: one release timer, not one per batch`);
  }
  await waitFor("both connects applied", () => table.size === 2, 2000);
  t.ok(table.has(connectionKey({ localAddress: "10.0.0.1", localPort: 40001, remoteAddress: "10.0.0.2", remotePort: 80, netns: 1 })));
  t.equal(tracker.eventsReceived, 2);
  const armedWhileHeld = timers.armed;
  await sleep(200);
  t.equal(timers.armed, armedWhileHeld, "nothing held: no timer armed again");
});
