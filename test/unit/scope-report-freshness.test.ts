/**
 * A body older than one rebuild cycle is not served as current (real HTTP on the plugin's Unix
 * socket): the first /report after start and after a quiet spell hold a connection opened after the
 * last build; a rebuild that cannot finish within the wait is answered with a valid report holding
 * no nodes, and the next request gets the rebuilt one.
 */
import t, { type Test } from "tap";
import { join } from "node:path";
import { startScopePlugin, type ScopePluginHandle } from "../../plugin/servers/scope/plugin-server.ts";
import type { ReportBackend } from "../../plugin/model/backend.ts";
import { conn, eventually, httpGet, makeBackend, tempDir } from "../helpers/server-harness.ts";

async function plugin(t: Test, backend: ReportBackend, cache: Parameters<typeof startScopePlugin>[0]["cache"]): Promise<ScopePluginHandle> {
  const handle = await startScopePlugin({ backend, hostId: "host-1", root: join(tempDir(t), "plugins"), cache });
  t.teardown(() => handle.close());
  return handle;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function nodeIds(t: Test, p: ScopePluginHandle, probe: string): Promise<string[]> {
  const reply = await httpGet(p.socketPath, `/report?api_version=1&probe_id=${probe}`);
  t.equal(reply.status, 200);
  return Object.keys(JSON.parse(reply.body).Endpoint.nodes);
}

t.test("the first /report after start holds a connection opened after the last build", async (t) => {
  const { table, backend } = makeBackend();
  table.open(conn({ localAddress: "10.9.1.1", localPort: 40001 }));
  const p = await plugin(t, backend, { minRebuildIntervalMs: 20, buildCostFactor: 1 });
  const builtAtStart = p.cache.builds;
  await sleep(300); // more than one rebuild cycle (20 ms and a build of one connection)
  table.open(conn({ localAddress: "10.9.1.2", localPort: 40002 }));
  const ids = await nodeIds(t, p, "first");
  t.ok(ids.some((id) => id.includes("10.9.1.2")), "the connection opened after the start's build is there");
  t.ok(ids.some((id) => id.includes("10.9.1.1")), "and the one before it");
  t.ok(p.cache.builds > builtAtStart, "the request was answered from a body built for it");
});

t.test("after a quiet spell, the first /report of a known probe holds a connection opened during it", async (t) => {
  const { table, backend } = makeBackend();
  table.open(conn({ localAddress: "10.9.2.1", localPort: 40001 }));
  const p = await plugin(t, backend, { minRebuildIntervalMs: 20, buildCostFactor: 1, idleAfterMs: 200 });
  await nodeIds(t, p, "known");
  await eventually(() => backend.clientCount() === 1, 2000, "the probe registered");
  await p.cache.refresh(); // the probe's own body
  t.ok((await nodeIds(t, p, "known")).some((id) => id.includes("10.9.2.1")), "served its own body");
  await sleep(400); // quiet: nobody asks, nothing is rebuilt
  const quietBuilds = p.cache.builds;
  table.open(conn({ localAddress: "10.9.2.2", localPort: 40002 }));
  await sleep(100);
  t.equal(p.cache.builds, quietBuilds, "a change during the quiet spell rebuilds nothing");
  t.ok((await nodeIds(t, p, "known")).some((id) => id.includes("10.9.2.2")), "the first request after it holds the connection opened during it");
});

t.test("an unchanged table: a body up to the timestamp refresh old is current, served without a rebuild", async (t) => {
  const { table, backend } = makeBackend();
  table.open(conn({ localAddress: "10.9.3.1", localPort: 40001 }));
  const p = await plugin(t, backend, { minRebuildIntervalMs: 20, buildCostFactor: 1, maxAgeMs: 60_000 });
  const builtBy = Date.now();
  await sleep(300);
  const report = JSON.parse((await httpGet(p.socketPath, "/report?api_version=1&probe_id=steady")).body);
  t.ok(Object.keys(report.Endpoint.nodes).some((id) => id.includes("10.9.3.1")));
  t.ok(Date.parse(report.EndpointReporterStatus.generatedAt) <= builtBy, "nothing changed since the snapshot: the start's body, not one built on the request path");
});

t.test("a rebuild that cannot finish within the wait: a valid report with no nodes that says why, then the rebuilt one", async (t) => {
  const { table, backend } = makeBackend();
  for (let i = 0; i < 20_000; i++) table.open(conn({ localAddress: `10.1.${i >> 8}.${i & 255}`, localPort: 30000 + (i % 30000), pid: 1 + (i % 50) }));
  const started = performance.now();
  // No wait at all: a build of 20,000 connections takes several slices, so it never finishes first.
  const p = await plugin(t, backend, { minRebuildIntervalMs: 1, buildCostFactor: 0, staleWaitMs: 0 });
  await sleep(performance.now() - started + 50); // past one cycle: 1 ms and the start's build
  table.open(conn({ localAddress: "10.200.0.1", localPort: 12345 }));
  const reply = await httpGet(p.socketPath, "/report?api_version=1&probe_id=late");
  t.equal(reply.status, 200, "not an error: Scope would mark the plugin failed");
  const report = JSON.parse(reply.body);
  t.same(report.Endpoint.nodes, {}, "no nodes: nothing old served as current");
  t.equal(report.Plugins.length, 1);
  t.match(report.Plugins[0], { id: "endpoint-reporter", api_version: "1", interfaces: ["reporter"] });
  t.match(report.Plugins[0].description, /report not ready: rebuilding it \(\d+ open connections; the last build took \d+ ms\) takes longer than 0 ms; the next request gets it/);
  await eventually(() => p.cache.builds > 1, 20_000, "the rebuild carried on");
  const ids = await nodeIds(t, p, "late");
  t.ok(ids.includes(";10.200.0.1;12345"), "the next request gets the rebuilt body, with the new connection");
});
