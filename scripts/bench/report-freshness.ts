/**
 * The first Scope /report after a quiet spell, which must not be an old body: how long it takes and
 * whether it was rebuilt in time or answered with the stand-in (a report with no nodes), at 1k, 10k
 * and 100k connections, against references measured in the same run:
 *   - /report from a ready body (a probe asking while nothing changed): what the request path costs
 *     when no rebuild is needed;
 *   - JSON.stringify of the same Endpoint nodes built as objects (buildEndpointNodes), CPU time:
 *     the plain serialization of the same report, to judge the cache's build by.
 * The build itself is timed too (CPU and wall of ReportCache.refresh with one probe registered):
 * it decides whether a rebuild fits in the wait (staleWaitMs, 250 ms) inside Scope's 500 ms.
 *
 *   node --expose-gc --import tsx scripts/bench/report-freshness.ts [--sizes 1000,10000,100000] [--trials 5]
 *
 * The plugin server runs in this process over a synthetic table (every connection to a distinct
 * remote address, so Scope's thinning keeps them all: the largest body for N); the client reads
 * the body as bytes over the real Unix socket. The quiet spell is shortened (idleAfterMs 500 ms
 * instead of 30 s); what counts is that nothing was rebuilt during it, so the timestamp refresh
 * (maxAgeMs) is pushed out of the run: it could start a build in the spell's first 500 ms.
 */
import { parseArgs } from "node:util";
import { buildEndpointNodes } from "../../plugin/servers/scope/endpoint-topology.ts";
import { startScopePlugin } from "../../plugin/servers/scope/plugin-server.ts";
import { conn, httpGetBytes, makeBackend } from "../../test/helpers/server-harness.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { distribution } from "./timing.ts";

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "1000,10000,100000" },
    trials: { type: "string", default: "5" },
  },
});
const sizes = values.sizes.split(",").map(Number);
const trials = Number(values.trials);
const QUIET_MS = 500;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);
const fmt = (ms: number) => (ms < 10 ? ms.toFixed(2) : ms.toFixed(0));

async function run(n: number) {
  const { table, backend } = makeBackend(n + 1000);
  for (let i = 0; i < n; i++) {
    const remote = `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    table.open(i % 2 === 0
      ? conn({ localAddress: "10.0.0.1", localPort: 443, remoteAddress: remote, remotePort: 32768 + (i % 28000), direction: "incoming", pid: 1000 + (i % 50) })
      : conn({ localAddress: "10.0.0.1", localPort: 32768 + (i % 28000), remoteAddress: remote, remotePort: 5432, direction: "outgoing", pid: 2000 + (i % 50) }));
  }
  const dir = mkdtempSync(join(tmpdir(), "er-fresh-"));
  const plugin = await startScopePlugin({ backend, hostId: "bench", root: join(dir, "plugins"), cache: { idleAfterMs: QUIET_MS, maxAgeMs: 600_000 } });
  const path = "/report?api_version=1&probe_id=bench";
  const get = async () => {
    const t0 = performance.now();
    const reply = await httpGetBytes(plugin.socketPath, path);
    if (reply.status !== 200) throw new Error(`/report answered ${reply.status}`);
    return { ms: performance.now() - t0, body: reply.body };
  };
  try {
    // The probe registers and gets its own body.
    await get();
    await sleep(100);
    await plugin.cache.refresh();

    // Reference 1: a ready body, nothing changed.
    const ready: number[] = [];
    for (let i = 0; i < 20; i++) {
      ready.push((await get()).ms);
      await sleep(50);
    }

    // The build, with the probe registered (what a stale request waits for).
    const wall: number[] = [];
    const cpu: number[] = [];
    for (let i = 0; i < 3; i++) {
      gc();
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      await plugin.cache.refresh();
      wall.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1000);
    }
    // Reference 2: the same nodes as objects, serialized by JSON.stringify.
    const nodes = buildEndpointNodes(table.snapshot(), { hostId: "bench", localNetworks: [], timestamp: new Date().toISOString() });
    const stringify: number[] = [];
    for (let i = 0; i < 3; i++) {
      gc();
      const c0 = process.cpuUsage();
      Buffer.from(JSON.stringify({ Endpoint: { nodes: Object.fromEntries(nodes) } }));
      const c = process.cpuUsage(c0);
      stringify.push((c.user + c.system) / 1000);
    }

    // First requests after quiet spells, each after a connection opened during the spell.
    const first: number[] = [];
    let fresh = 0;
    let standIns = 0;
    let nextFresh = 0;
    for (let trial = 0; trial < trials; trial++) {
      await sleep(QUIET_MS + 300);
      const port = 10_000 + trial;
      table.open(conn({ localAddress: "10.250.0.1", localPort: port, remoteAddress: "10.251.0.1", remotePort: 80 }));
      gc();
      const { ms, body } = await get();
      first.push(ms);
      const text = body.toString("utf8");
      if (text.includes(`;10.250.0.1;${port}`)) fresh++;
      else if (text.includes('"nodes":{}') && text.includes("report not ready")) standIns++;
      else throw new Error(`an old body was served as current (${n} connections, trial ${trial}): ${text.slice(0, 200)} ... ${text.slice(-400)}`);
      // The probe's next tick, a second later.
      await sleep(1000);
      if ((await get()).body.toString("utf8").includes(`;10.250.0.1;${port}`)) nextFresh++;
    }
    return {
      n, bodyMB: (await get()).body.length / 1e6,
      ready: distribution(ready), build: distribution(wall), buildCpu: distribution(cpu), stringify: distribution(stringify),
      first: distribution(first), firstMax: Math.max(...first), fresh, standIns, nextFresh,
    };
  } finally {
    await plugin.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`load average ${loadavg().map((l) => l.toFixed(1)).join(" ")} on ${cpus().length} CPUs; CPU times are this process's, wall times include waiting for a CPU`);
console.log(`| connections | body | ready /report p50 | build CPU p50 (wall) | JSON.stringify CPU p50 | build/stringify CPU | first /report after quiet p50 / max | first/ready | rebuilt in time | stand-in | next tick fresh |`);
console.log(`|---|---|---|---|---|---|---|---|---|---|---|`);
for (const n of sizes) {
  const r = await run(n);
  console.log(`| ${n} | ${r.bodyMB.toFixed(1)} MB | ${fmt(r.ready.p50)} ms | ${fmt(r.buildCpu.p50)} ms (${fmt(r.build.p50)}) | ${fmt(r.stringify.p50)} ms | ${(r.buildCpu.p50 / r.stringify.p50).toFixed(2)}x | ${fmt(r.first.p50)} / ${fmt(r.firstMax)} ms | ${(r.first.p50 / r.ready.p50).toFixed(1)}x | ${r.fresh}/${trials} | ${r.standIns}/${trials} | ${r.nextFresh}/${trials} |`);
}
