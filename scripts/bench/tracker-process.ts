/**
 * The plugin's tracker stack alone (no servers), for the churn benchmark: prints "ready" once
 * attached and seeded, and one JSON line of its counters and CPU when SIGTERM arrives.
 */
import { createLogger } from "../../plugin/log.ts";
import { defaultStackConfig, startTrackerStack } from "../../plugin/plugin.ts";

const ringBufferBytes = Number(process.env.RING_BUFFER_BYTES ?? defaultStackConfig.ringBufferBytes);
const drainIntervalMs = Number(process.env.DRAIN_INTERVAL_MS ?? defaultStackConfig.drainIntervalMs);
const stack = await startTrackerStack({ ...defaultStackConfig, source: "ebpf", ringBufferBytes, drainIntervalMs }, createLogger("warn"));
const cpuAtStart = process.cpuUsage();
let closed = 0;
let opened = 0;
stack.table.subscribe((change) => (change.type === "open" ? opened++ : closed++));
process.stdout.write("ready\n");
process.on("SIGTERM", async () => {
  const cpu = process.cpuUsage(cpuAtStart);
  const status = stack.supervisor.status();
  await stack.stop();
  process.stdout.write(`${JSON.stringify({ ...status.counters, source: status.source, opened, closed, cpuUserMs: cpu.user / 1000, cpuSysMs: cpu.system / 1000, heapUsedBytes: process.memoryUsage().heapUsed })}\n`);
  process.exit(0);
});
