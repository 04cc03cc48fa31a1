/**
 * Bad input for the conntrack source, with real flows (SYNs a raw socket sends into a namespace of
 * ours, each a conntrack flow): a dump of 100k flows and an event storm against a stalled reader.
 * Memory stays bounded (flow caps, a bounded batch queue, a fixed socket buffer) and whatever is
 * dropped is counted: flows past the cap, and the events the kernel could not queue (ENOBUFS),
 * which a fresh dump then heals.
 */
import t from "tap";
import { createFlowNamespace } from "../helpers/flow-namespace.ts";

const MiB = 1024 * 1024;

t.test("a dump of 100k flows: every flow read, memory bounded, the cap counted", async (t) => {
  const ns = createFlowNamespace();
  t.teardown(() => ns.destroy());
  await ns.burst(100_000);

  const all = ns.reader({ flows: { maxFlows: 262_144 } });
  t.teardown(() => all.stop());
  const first = (await all.next()).dumped;
  t.equal(first.status.counters.lastDumpFlows, 100_000, "the dump carried every flow (TCP, IPv4)");
  t.equal(first.status.counters.untranslatedSkipped, 100_000, "untranslated flows are skipped while only NAT matters (eBPF live)");
  t.equal(first.status.counters.flows, 0, "and nothing of them is kept");
  t.ok(first.rssBytes - first.rssBeforeBytes < 64 * MiB, `RSS grew ${((first.rssBytes - first.rssBeforeBytes) / MiB).toFixed(1)} MiB`);

  const capped = ns.reader({ flows: { maxFlows: 50_000 }, keepAll: true });
  t.teardown(() => capped.stop());
  const dumped = (await capped.next()).dumped;
  t.equal(dumped.status.counters.lastDumpFlows, 100_000);
  t.equal(dumped.status.counters.flows, 50_000, "kept up to the cap");
  // A handful of the flows may already be in a closing state, which is never kept.
  const { flows, flowsDropped, lastDumpFlows } = dumped.status.counters;
  t.ok(flowsDropped > 49_900 && flows + flowsDropped <= lastDumpFlows, `the rest counted, not held (${flowsDropped} dropped)`);
  t.ok(dumped.heapUsedBytes < 200 * MiB, `heap ${(dumped.heapUsedBytes / MiB).toFixed(1)} MiB with 50k flows kept`);
});

t.test("an event storm against a stalled reader: ENOBUFS counted, a fresh dump heals, memory bounded", async (t) => {
  const ns = createFlowNamespace();
  t.teardown(() => ns.destroy());
  // The smallest socket buffer and one queued batch: a stalled event loop makes the kernel drop.
  const reader = ns.reader({ receiveBufferBytes: 4096, maxQueuedBatches: 1, keepAll: true });
  t.teardown(() => reader.stop());
  t.equal((await reader.next()).dumped.status.counters.lastDumpFlows, 0, "an empty namespace to start with");
  reader.send("block 6000");
  await ns.burst(60_000);
  t.same(await reader.next(), { blocked: 6000 });
  let status: Record<string, any> = {};
  for (let i = 0; i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    reader.send("status");
    status = await reader.next();
    if (status.status.counters.lostEvents > 0 && status.status.counters.dumps >= 2 && status.status.counters.flows === 60_000) break;
  }
  const c = status.status.counters;
  t.ok(c.lostEvents > 0, `the kernel's drops are counted (${c.lostEvents} ENOBUFS)`);
  t.ok(c.dumps >= 2, "each followed by a fresh dump");
  // Conntrack ids are 32-bit hashes: among 60k flows two may share one (Scope's walker keys by the
  // same id), and the table holds them as one.
  t.ok(c.flows >= 59_990 && c.flows <= 60_000, `which found every flow the dropped events would have told (${c.flows})`);
  t.ok(status.rssBytes - status.rssBeforeBytes < 128 * MiB, `RSS grew ${((status.rssBytes - status.rssBeforeBytes) / MiB).toFixed(1)} MiB`);
});
