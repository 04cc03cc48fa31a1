import t, { type Test } from "tap";
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { request } from "node:http";
import { join } from "node:path";
import { startScopePlugin, type ScopePluginHandle } from "../../plugin/servers/scope/plugin-server.ts";
import type { ReportBackend } from "../../plugin/model/backend.ts";
import { closeConn, conn, eventually, httpGet, httpGetSettled, makeBackend, tempDir } from "../helpers/server-harness.ts";

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** Every rule of the reference page a single report can be checked against. */
function checkReport(t: Test, report: any, pluginId: string): void {
  t.same(Object.keys(report).sort(), ["Endpoint", "EndpointReporterStatus", "Plugins"], "top-level keys are Go field names");
  t.equal(report.Plugins.length, 1, "exactly one plugin spec");
  const spec = report.Plugins[0];
  t.equal(spec.id, pluginId);
  t.ok(spec.label.length > 0, "non-empty label");
  t.ok(typeof spec.description === "string" && spec.description.length > 0);
  t.ok(spec.interfaces.includes("reporter"));
  t.equal(spec.api_version, "1");
  t.notOk("status" in spec, "the spec's status field is left to the probe");
  let bad = 0;
  for (const [key, node] of Object.entries<any>(report.Endpoint.nodes)) {
    if (node.id !== key) bad++;
    if (node.topology !== "endpoint") bad++;
    const adj: string[] = node.adjacency ?? [];
    for (let i = 1; i < adj.length; i++) if (!(adj[i - 1] < adj[i])) bad++;
    for (const entry of Object.values<any>(node.latest ?? {})) {
      if (typeof entry.timestamp !== "string" || !RFC3339.test(entry.timestamp) || Number.isNaN(Date.parse(entry.timestamp))) bad++;
      if (typeof entry.value !== "string") bad++;
    }
  }
  t.equal(bad, 0, "ids equal keys, topology endpoint, adjacency sorted and unique, RFC3339 timestamps, string values");
}

async function plugin(t: Test, backend: ReportBackend, extra: Partial<Parameters<typeof startScopePlugin>[0]> = {}): Promise<ScopePluginHandle> {
  const handle = await startScopePlugin({ backend, hostId: "host-1", root: join(tempDir(t), "plugins"), ...extra });
  t.teardown(() => handle.close());
  return handle;
}

t.test("GET /report: the report follows every rule, with ids for IPv4, IPv6 and loopback in a namespace", async (t) => {
  const { table, backend } = makeBackend();
  const netns = 4026532000;
  table.open(conn({ localAddress: "10.0.0.1", localPort: 40000, remoteAddress: "10.0.0.2", remotePort: 80, pid: 1234 }));
  table.open(conn({ localAddress: "2001:db8::1", localPort: 443, remoteAddress: "2001:DB8:0:0::2", remotePort: 50000, direction: "incoming", pid: 77 }));
  table.open(conn({ localAddress: "127.0.0.1", localPort: 45000, remoteAddress: "127.0.0.1", remotePort: 8080, direction: "outgoing", pid: 10, netns }));
  table.open(conn({ localAddress: "127.0.0.1", localPort: 8080, remoteAddress: "127.0.0.1", remotePort: 45000, direction: "incoming", pid: 20, netns }));
  table.open(conn({ localAddress: "127.0.0.1", localPort: 45001, remoteAddress: "127.0.0.1", remotePort: 8080, direction: "outgoing", pid: 11, netns }));
  const p = await plugin(t, backend);

  const reply = await httpGet(p.socketPath, "/report?api_version=1&probe_id=abc123");
  t.equal(reply.status, 200);
  t.equal(reply.headers["content-type"], "application/json");
  const report = JSON.parse(reply.body);
  checkReport(t, report, "endpoint-reporter");
  const nodes = report.Endpoint.nodes;

  t.same(nodes[";10.0.0.1;40000"].adjacency, [";10.0.0.2;80"], "outgoing: local end opened it");
  t.same(nodes[";10.0.0.1;40000"].latest.pid.value, "1234");
  t.same(nodes[";10.0.0.1;40000"].latest.host_node_id.value, "host-1;<host>");
  t.notOk(nodes[";10.0.0.2;80"].latest, "no pid on the remote side");

  t.same(nodes[";2001:db8::2;50000"].adjacency, [";2001:db8::1;443"], "incoming IPv6: remote end opened it");
  t.equal(nodes[";2001:db8::1;443"].latest.pid.value, "77");

  const lo = (port: number) => `host-1-${netns};127.0.0.1;${port}`;
  t.same(nodes[lo(45000)].adjacency, [lo(8080)], "loopback ids carry host id and namespace");
  t.same(nodes[lo(45001)].adjacency, [lo(8080)]);
  t.equal(nodes[lo(45000)].latest.pid.value, "10");
  t.equal(nodes[lo(8080)].latest.pid.value, "20");
  t.equal(Object.keys(nodes).length, 7);

  const status = report.EndpointReporterStatus;
  t.equal(status.source, "ebpf");
  t.match(status.reason, /eBPF loaded/);
  t.ok(RFC3339.test(status.since));
  t.match(report.Plugins[0].description, /live source: eBPF since 2024-01-02T03:04:05.678Z/);

  const head = await httpGet(p.socketPath, "/report?api_version=1&probe_id=abc123", "HEAD");
  t.equal(head.status, 200);
  t.equal(head.body, "");
});

t.test("each probe_id sees every closed connection exactly once", async (t) => {
  const { table, backend } = makeBackend();
  const keep = conn({ localPort: 40001 });
  const gone = conn({ localPort: 40002 });
  table.open(keep);
  table.open(gone);
  const p = await plugin(t, backend);
  const fromNodes = async (probe: string) => {
    const report = JSON.parse((await httpGetSettled(p.socketPath, `/report?api_version=1&probe_id=${probe}`)).body);
    checkReport(t, report, "endpoint-reporter");
    return Object.keys(report.Endpoint.nodes).filter((id) => id.startsWith(";10.0.0.1;")).sort();
  };

  t.same(await fromNodes("alpha"), [";10.0.0.1;40001", ";10.0.0.1;40002"], "first request: open connections");
  t.same(await fromNodes("beta"), [";10.0.0.1;40001", ";10.0.0.1;40002"]);
  await eventually(() => backend.clientCount() === 2, 5000, "probes registered");

  closeConn(table, gone);
  await p.cache.refresh();
  t.same(await fromNodes("alpha"), [";10.0.0.1;40001", ";10.0.0.1;40002"], "alpha gets the closed one");
  t.same(await fromNodes("beta"), [";10.0.0.1;40001", ";10.0.0.1;40002"], "beta gets it too");
  await p.cache.refresh();
  t.same(await fromNodes("alpha"), [";10.0.0.1;40001"], "only once");
  t.same(await fromNodes("beta"), [";10.0.0.1;40001"]);
  t.same(await fromNodes("gamma"), [";10.0.0.1;40001"], "a later probe never saw it open");

  // Opened and closed between two polls: still shown once.
  const blink = conn({ localPort: 40003 });
  table.open(blink);
  closeConn(table, blink);
  await p.cache.refresh();
  t.same(await fromNodes("alpha"), [";10.0.0.1;40001", ";10.0.0.1;40003"]);
  t.same(await fromNodes("alpha"), [";10.0.0.1;40001"], "before the next build: the open connections, not the delivered close again");
  await p.cache.refresh();
  t.same(await fromNodes("alpha"), [";10.0.0.1;40001"]);
  t.equal(backend.clientCount(), 3);
  t.match(backend.report("scope:alpha"), { firstReport: false }, "probe clients are named scope:<probe_id>");
});

t.test("answers come from a ready snapshot, rebuilt after changes", async (t) => {
  const { table, backend } = makeBackend();
  for (let i = 0; i < 20_000; i++) table.open(conn({ localAddress: `10.1.${i >> 8}.${i & 255}`, localPort: 30000 + (i % 30000), pid: 1 + (i % 50) }));
  const p = await plugin(t, backend, { cache: { minRebuildIntervalMs: 50 } });
  await httpGet(p.socketPath, "/report?api_version=1&probe_id=fast");
  await eventually(() => backend.clientCount() === 1);
  await p.cache.refresh();
  const builds = p.cache.builds;
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const reply = await httpGet(p.socketPath, "/report?api_version=1&probe_id=fast");
    times.push(performance.now() - t0);
    t.equal(reply.status, 200);
  }
  // How fast is a figure of scripts/bench/report-latency.ts, not an assertion here.
  t.equal(p.cache.builds, builds, `serving builds nothing (answered in ${Math.min(...times).toFixed(1)} ms at best)`);

  // A build of a big table runs in steps: requests are answered in between, from the last body.
  let built = false;
  const job = p.cache.refresh().then(() => (built = true));
  const answeredDuringBuild = await new Promise<boolean>((resolve, reject) => {
    const req = request({ socketPath: p.socketPath, path: "/report?api_version=1&probe_id=fast", agent: false }, (res) => {
      resolve(!built && res.statusCode === 200);
      res.resume();
    });
    req.on("error", reject);
    req.end();
  });
  t.ok(answeredDuringBuild, "answered while a build was still running");
  await job;

  const afterJob = p.cache.builds;
  table.open(conn({ localAddress: "10.200.0.1", localPort: 12345 }));
  await eventually(() => p.cache.builds > afterJob, 5000, "rebuild after a change");
  const body = (await httpGet(p.socketPath, "/report?api_version=1&probe_id=fast")).body;
  t.ok(body.includes(";10.200.0.1;12345"), "the change is in the next report");
});

t.test("a rebuild waits while a body is still being written, then finishes; the body arrives whole", async (t) => {
  const { table, backend } = makeBackend();
  for (let i = 0; i < 20_000; i++) table.open(conn({ localAddress: `10.1.${i >> 8}.${i & 255}`, localPort: 30000 + (i % 30000), pid: 1 + (i % 50) }));
  // A wait budget far longer than the hold below, so that only a rebuild that does not wait can finish during it.
  const p = await plugin(t, backend, { cache: { minRebuildIntervalMs: 50, maxWaitForResponsesMs: 120_000 } });
  await httpGet(p.socketPath, "/report?api_version=1&probe_id=slow");
  await eventually(() => backend.clientCount() === 1, 5000, "probe registered");
  await p.cache.refresh();

  // Reference, same run: how long a change takes to be rebuilt with no body going out.
  let builds = p.cache.builds;
  let t0 = performance.now();
  table.open(conn({ localAddress: "10.200.0.1", localPort: 12345 }));
  await eventually(() => p.cache.builds > builds, 60_000, "the reference rebuild");
  const unhindered = performance.now() - t0;
  await p.cache.refresh();

  // A reader that takes the headers and then stops reading: several MB stay in flight.
  let resume: (() => void) | undefined;
  let ended = Number.POSITIVE_INFINITY;
  const received = new Promise<Buffer>((resolve, reject) => {
    const req = request({ socketPath: p.socketPath, path: "/report?api_version=1&probe_id=slow", agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.pause();
      resume = () => void res.on("data", (d: Buffer) => chunks.push(d)).resume();
      res.on("end", () => {
        ended = performance.now();
        resolve(Buffer.concat(chunks));
      });
    });
    req.on("error", reject);
    req.end();
  });
  await eventually(() => resume !== undefined, 5000, "the response headers");
  builds = p.cache.builds;
  const waitsBefore = p.cache.waits;
  table.open(conn({ localAddress: "10.200.0.2", localPort: 12346 }));
  // Held for several times what the same rebuild took unhindered: a rebuild that did not wait would be done by then.
  const hold = Math.max(1_000, 4 * unhindered);
  t0 = performance.now();
  let finishedDuringHold = false;
  while (performance.now() - t0 < hold) {
    if (p.cache.builds !== builds) finishedDuringHold = true;
    await new Promise((r) => setTimeout(r, 10));
  }
  t.notOk(finishedDuringHold, `no rebuild finished in ${hold.toFixed(0)} ms of the body going out (unhindered: ${unhindered.toFixed(0)} ms)`);
  t.ok(p.cache.waits > waitsBefore, "the rebuild paused for the body");
  resume!();
  const body = await received;
  await eventually(() => p.cache.builds > builds, 60_000, "the rebuild after the body was out");
  t.ok(ended < Number.POSITIVE_INFINITY, "the body ended before the rebuild was observed");
  t.ok(Object.keys(JSON.parse(body.toString("utf8")).Endpoint.nodes).length > 20_000, "the body arrived whole and parses");
});

t.test("with no probe asking nothing is rebuilt; the first request after the quiet spell is rebuilt for and wakes the rebuilds", async (t) => {
  const { table, backend } = makeBackend();
  table.open(conn({ localAddress: "10.9.0.1", localPort: 40001 }));
  const p = await plugin(t, backend, { cache: { minRebuildIntervalMs: 20, maxAgeMs: 50, idleAfterMs: 200 } });
  const afterStart = p.cache.builds;
  table.open(conn({ localAddress: "10.9.0.2", localPort: 40002 }));
  await new Promise((r) => setTimeout(r, 300));
  t.equal(p.cache.builds, afterStart, "neither a change nor the age timer rebuilds while nobody asks");
  const first = JSON.parse((await httpGet(p.socketPath, "/report?api_version=1&probe_id=idle1")).body);
  t.ok(Object.keys(first.Endpoint.nodes).some((id) => id.includes("10.9.0.2")), "the first request is not served the old body: it holds the change");
  await eventually(() => p.cache.builds > afterStart, 2000, "the request woke the rebuilds");
  let carried = false;
  for (let i = 0; i < 100 && !carried; i++) {
    const fresh = JSON.parse((await httpGet(p.socketPath, "/report?api_version=1&probe_id=idle1")).body);
    carried = Object.keys(fresh.Endpoint.nodes).some((id) => id.includes("10.9.0.2"));
    if (!carried) await new Promise((r) => setTimeout(r, 20));
  }
  t.ok(carried, "the next bodies carry the change");
});

t.test("routes: 404 elsewhere, 405 for other methods, 400 for bad queries", async (t) => {
  const { backend } = makeBackend();
  const p = await plugin(t, backend);
  const cases: Array<[string, string, number]> = [
    ["GET", "/", 404],
    ["GET", "/control", 404],
    ["POST", "/control", 404],
    ["GET", "/report/extra", 404],
    ["POST", "/report?api_version=1&probe_id=x", 405],
    ["DELETE", "/report", 405],
    ["PUT", "/report", 405],
    ["GET", "/report?api_version=2&probe_id=x", 400],
    ["GET", "/report?api_version=1&api_version=1", 400],
    ["GET", "/report?api_version=1&probe_id=a&probe_id=b", 400],
    ["GET", "/report?api_version=1&probe_id=has%20space", 400],
    ["GET", `/report?api_version=1&probe_id=${"x".repeat(200)}`, 400],
    ["GET", "/report", 200],
    ["GET", "/report?api_version=1", 200],
  ];
  for (const [method, path, want] of cases) {
    const reply = await httpGet(p.socketPath, path, method);
    t.equal(reply.status, want, `${method} ${path.slice(0, 60)}`);
    if (want === 405) t.equal(reply.headers.allow, "GET, HEAD");
  }
  t.equal(backend.clientCount(), 0, "no probe registered by bad or anonymous requests");
});

t.test("socket layout: <root>/<id>/<id>.sock, dir 0700, stale socket replaced, removed on close", async (t) => {
  const { backend } = makeBackend();
  const root = join(tempDir(t), "plugins");
  const dir = join(root, "conn-tracker");
  const path = join(dir, "conn-tracker.sock");
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const stale = createServer();
  await new Promise<void>((r) => stale.listen(join(dir, "old.sock"), r));
  renameSync(join(dir, "old.sock"), path);
  await new Promise<void>((r) => stale.close(() => r()));

  const p = await startScopePlugin({ backend, hostId: "h", root, id: "conn-tracker" });
  t.equal(p.socketPath, path);
  t.equal(statSync(dir).mode & 0o777, 0o700, "plugin dir is 0700");
  t.ok(statSync(path).isSocket());
  t.equal((await httpGet(path, "/report?api_version=1&probe_id=x")).status, 200, "the stale socket was replaced");
  t.equal(JSON.parse((await httpGet(path, "/report")).body).Plugins[0].id, "conn-tracker", "spec id = socket name");

  await t.rejects(startScopePlugin({ backend, hostId: "h", root, id: "conn-tracker" }), { code: "ERR_CONFIG", message: /already listening/ });
  t.equal((await httpGet(path, "/report")).status, 200, "the live plugin is untouched");
  await p.close();
  t.throws(() => statSync(path), { code: "ENOENT" }, "socket removed on close");
  t.ok(statSync(root).isDirectory(), "the plugins root stays (the probe needs it to exist)");

  mkdirSync(join(root, "blocked"), { recursive: true });
  writeFileSync(join(root, "blocked", "blocked.sock"), "not a socket");
  await t.rejects(startScopePlugin({ backend, hostId: "h", root, id: "blocked" }), { code: "ERR_CONFIG", message: /not a socket/ });
  t.equal(readFileSync(join(root, "blocked", "blocked.sock"), "utf8"), "not a socket");

  for (const id of ["", "bad_id", "-lead", "trail-", "dou--ble", "has.dot", "sp ace"]) {
    await t.rejects(startScopePlugin({ backend, hostId: "h", root, id }), { code: "ERR_CONFIG", message: /not accepted by Scope/ }, JSON.stringify(id));
  }
  for (const hostId of ["", "h;x", 'h"x', "h\\x", "h\nx"]) {
    await t.rejects(startScopePlugin({ backend, hostId, root }), { code: "ERR_CONFIG", message: /host id/ }, JSON.stringify(hostId));
  }
  await t.rejects(startScopePlugin({ backend, hostId: "h", root, localNetworks: ["10.0.0.0"] }), { code: "ERR_CONFIG" });
});

t.test("the host id defaults to $SCOPE_HOSTNAME", async (t) => {
  const { table, backend } = makeBackend();
  table.open(conn({ localAddress: "127.0.0.1", netns: 0 }));
  const saved = process.env.SCOPE_HOSTNAME;
  process.env.SCOPE_HOSTNAME = "scope-host";
  t.teardown(() => {
    if (saved === undefined) delete process.env.SCOPE_HOSTNAME;
    else process.env.SCOPE_HOSTNAME = saved;
  });
  const p = await startScopePlugin({ backend, root: join(tempDir(t), "plugins") });
  t.teardown(() => p.close());
  t.equal(p.hostId, "scope-host");
  const nodes = JSON.parse((await httpGet(p.socketPath, "/report")).body).Endpoint.nodes;
  t.ok("scope-host;127.0.0.1;40000" in nodes, "loopback without a namespace: host id only");
});
