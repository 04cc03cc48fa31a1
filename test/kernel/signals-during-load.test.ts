/**
 * Loading while the JS thread is being signalled: the kernel's verifier gives up with EAGAIN
 * whenever a signal is pending on the loading thread (and libbpf retries only five times), so a
 * V8 CPU profiler (SIGPROF every sampling interval, here 100 µs: `node --cpu-prof`, an inspector
 * session) used to make every load fail, and the plugin fell back to /proc. The addon blocks the
 * thread's signals for the load; they arrive when it is done.
 */
import t from "tap";
import { Session } from "node:inspector/promises";
import { createLogger } from "../../plugin/log.ts";
import { defaultStackConfig, startTrackerStack } from "../../plugin/plugin.ts";
import { SocketSnapshot } from "../../plugin/snapshot/socket-snapshot.ts";
import { checkSnapshotIterator, runningKernelRelease } from "../../plugin/supervisor/kernel-support.ts";

async function profiling(t: Tap): Promise<void> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 100 });
  await session.post("Profiler.start");
  t.teardown(async () => {
    await session.post("Profiler.stop");
    session.disconnect();
  });
}
type Tap = { teardown(fn: () => unknown): void };

t.test("the tracker loads and goes live while a CPU profiler signals the thread", async (t) => {
  await profiling(t);
  const stack = await startTrackerStack({ ...defaultStackConfig, source: "ebpf" }, createLogger("silent"));
  t.teardown(() => stack.stop());
  t.equal(stack.supervisor.status().source, "ebpf");
  t.equal(stack.supervisor.status().counters.fallbacks, 0, "no fallback to /proc");
});

if (checkSnapshotIterator({ release: runningKernelRelease() }).supported) {
  t.test("the socket iterator loads while a CPU profiler signals the thread", async (t) => {
    await profiling(t);
    const snapshot = new SocketSnapshot();
    t.teardown(() => snapshot.close());
    let records = 0;
    await snapshot.read((batch) => (records += batch.byteLength / 80));
    t.ok(records >= 0, "and reads");
  });
}
