/**
 * The plugin's tracker stack alone (no servers), for the churn benchmark: prints "ready" once
 * attached and seeded, and one JSON line of its counters and CPU when SIGTERM arrives. A reader
 * takes a report every READER_INTERVAL_MS (default 1000, as a Scope probe does; 0 for none), so
 * closes are held for a client as they are in production.
 */
import { createLogger } from "../../plugin/log.ts";
import { defaultStackConfig, startTrackerStack } from "../../plugin/plugin.ts";

const ringBufferBytes = Number(process.env.RING_BUFFER_BYTES ?? defaultStackConfig.ringBufferBytes);
const drainIntervalMs = Number(process.env.DRAIN_INTERVAL_MS ?? defaultStackConfig.drainIntervalMs);
// CONNTRACK=0 runs it without the conntrack source (scripts/bench/conntrack-churn.ts compares both).
const conntrack = process.env.CONNTRACK !== "0";
const stack = await startTrackerStack({ ...defaultStackConfig, source: "ebpf", ringBufferBytes, drainIntervalMs, conntrack }, createLogger("warn"));
const cpuAtStart = process.cpuUsage();
const readerIntervalMs = Number(process.env.READER_INTERVAL_MS ?? 1000);
let reported = 0;
if (readerIntervalMs > 0) setInterval(() => (reported += stack.backend.report("scope:bench-probe").connections.length), readerIntervalMs).unref();
let closed = 0;
let opened = 0;
stack.table.subscribe((change) => (change.type === "open" ? opened++ : closed++));
process.stdout.write("ready\n");
process.on("SIGTERM", async () => {
  const cpu = process.cpuUsage(cpuAtStart);
  const status = stack.supervisor.status();
  const ct = stack.conntrack.status();
  await stack.stop();
  process.stdout.write(`${JSON.stringify({ ...status.counters, conntrack: { enabled: ct.enabled, ...ct.counters }, source: status.source, opened, closed, reported, cpuUserMs: cpu.user / 1000, cpuSysMs: cpu.system / 1000, heapUsedBytes: process.memoryUsage().heapUsed })}\n`);
  process.exit(0);
});
