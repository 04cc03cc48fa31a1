/**
 * A ConntrackSource alone in a process, for the tests and the benchmark that need it inside a
 * network namespace of their own (`ip netns exec NS node --import tsx test/helpers/conntrack-child.ts
 * '<options json>'`). Prints one JSON line when the first dump is applied ({"dumped": ...}), then
 * answers stdin commands, one per line: "status" (status, RSS, heap), "block MS" (keeps the event
 * loop busy for MS, as a stalled plugin would), "quit". Option `keepAll` keeps untranslated flows
 * from the first dump on (as on the /proc fallback).
 */
import { createInterface } from "node:readline";
import { ConntrackSource, type ConntrackSourceOptions } from "../../plugin/conntrack/conntrack-source.ts";
import { createLogger } from "../../plugin/log.ts";

const options = JSON.parse(process.argv[2] ?? "{}") as Partial<ConntrackSourceOptions> & { keepAll?: boolean };
const source = new ConntrackSource({ procRoot: "/proc", retryMs: 60_000, ...options }, createLogger("warn"));
// Before the first dump: keep untranslated flows too, as on the /proc fallback.
if (options.keepAll === true) source.flows.keepAll = true;
const startedAt = performance.now();
const cpuAtStart = process.cpuUsage();
const rssBefore = process.memoryUsage().rss;
let reported = false;

function snapshot() {
  const m = process.memoryUsage();
  return { status: source.status(), rssBytes: m.rss, rssBeforeBytes: rssBefore, heapUsedBytes: m.heapUsed, externalBytes: m.external };
}

source.onChange(() => {
  if (reported || source.flows.counters.dumps === 0) return;
  reported = true;
  const cpu = process.cpuUsage(cpuAtStart);
  console.log(JSON.stringify({ dumped: { ms: performance.now() - startedAt, cpuMs: (cpu.user + cpu.system) / 1000, ...snapshot() } }));
});
source.start();
if (options.keepAll === true) {
  source.flows.keepAll = false;
  source.setKeepAll(true);
}
if (!source.enabled) console.log(JSON.stringify({ off: source.status() }));
// The native reader does not hold the loop open: stdin does.
createInterface({ input: process.stdin }).on("line", (line) => {
  const [command, arg] = line.trim().split(/\s+/);
  if (command === "status") {
    console.log(JSON.stringify(snapshot()));
  } else if (command === "block") {
    const until = performance.now() + Number(arg);
    while (performance.now() < until) { /* a stalled event loop */ }
    console.log(JSON.stringify({ blocked: Number(arg) }));
  } else if (command === "quit") {
    source.stop();
    process.exit(0);
  }
});
