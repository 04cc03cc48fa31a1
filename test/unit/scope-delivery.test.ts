import t, { type Test } from "tap";
import { request } from "node:http";
import { join } from "node:path";
import { startScopePlugin, type ScopePluginHandle } from "../../plugin/servers/scope/plugin-server.ts";
import type { ReportBackend } from "../../plugin/model/backend.ts";
import { closeConn, conn, eventually, httpGet, httpGetSettled, makeBackend, tempDir } from "../helpers/server-harness.ts";

async function plugin(t: Test, backend: ReportBackend): Promise<ScopePluginHandle> {
  const handle = await startScopePlugin({ backend, hostId: "host-1", root: join(tempDir(t), "plugins"), cache: { minRebuildIntervalMs: 20 } });
  t.teardown(() => handle.close());
  return handle;
}

const path = (probe: string) => `/report?api_version=1&probe_id=${probe}`;

/** The closed-connection count a body carries, and whether the node for `localPort` is in it. */
async function poll(p: ScopePluginHandle, probe: string, localPort?: number) {
  const report = JSON.parse((await httpGetSettled(p.socketPath, path(probe))).body);
  return {
    closed: report.EndpointReporterStatus.closedConnections as number,
    has: localPort !== undefined && Object.keys(report.Endpoint.nodes).includes(`;10.0.0.1;${localPort}`),
  };
}

async function registered(t: Test, p: ScopePluginHandle, backend: ReportBackend, probe: string) {
  await httpGet(p.socketPath, path(probe));
  await eventually(() => backend.clientCount() >= 1, 5000, "probe registered");
  await p.cache.refresh();
  t.equal((await poll(p, probe)).closed, 0, "registered, nothing closed yet");
}

t.test("HEAD /report delivers nothing: the close is in the next GET", async (t) => {
  const { table, backend } = makeBackend();
  const p = await plugin(t, backend);
  await registered(t, p, backend, "x");
  const gone = conn({ localPort: 41000 });
  table.open(gone);
  closeConn(table, gone);
  await p.cache.refresh();
  const head = await httpGet(p.socketPath, path("x"), "HEAD");
  t.equal(head.status, 200);
  await p.cache.refresh();
  t.same(await poll(p, "x", 41000), { closed: 1, has: true }, "the GET after a HEAD still carries the close");
  await p.cache.refresh();
  t.same(await poll(p, "x", 41000), { closed: 0, has: false }, "and once a GET delivered it, not again");
});

t.test("a body the probe abandons before its end delivers nothing; a body sent whole delivers once", async (t) => {
  const { table, backend } = makeBackend();
  // Several MB of body: far more than the socket buffers take before the reader gives up.
  for (let i = 0; i < 20_000; i++) table.open(conn({ localAddress: `10.1.${i >> 8}.${i & 255}`, localPort: 30000 + (i % 30000) }));
  const p = await plugin(t, backend);
  await registered(t, p, backend, "x");
  const gone = conn({ localPort: 41001 });
  table.open(gone);
  closeConn(table, gone);
  await p.cache.refresh();

  // The probe's 500 ms deadline: it reads the headers and a first chunk, then drops the connection.
  const partial = await new Promise<number>((resolve, reject) => {
    const req = request({ socketPath: p.socketPath, path: path("x"), agent: false }, (res) => {
      res.once("data", (chunk: Buffer) => {
        req.destroy();
        resolve(chunk.length);
      });
    });
    req.on("error", () => {});
    req.on("close", () => resolve(-1));
    req.end();
    setTimeout(() => reject(new Error("no data")), 10_000).unref();
  });
  t.ok(partial > 0, "the probe got part of the body");
  await eventually(() => backend.delivery().scopeBodiesUndelivered === 1, 5000, "the abandoned body counted");
  await p.cache.refresh();
  const status = JSON.parse((await httpGetSettled(p.socketPath, path("x"))).body).EndpointReporterStatus;
  t.equal(status.closedConnections, 1, "the next whole body still carries the close");
  t.equal(status.delivery.scopeBodiesUndelivered, 1, "and counts the abandoned one in its status");
  t.same(await poll(p, "x", 41001), { closed: 0, has: false }, "delivered: not served again, even before a rebuild");
  await p.cache.refresh();
  t.same(await poll(p, "x", 41001), { closed: 0, has: false });
  t.equal(backend.delivery().scopeBodiesUndelivered, 1);
});

t.test("two connections on one tuple closed between two polls are two closes", async (t) => {
  const { table, backend } = makeBackend();
  const p = await plugin(t, backend);
  await registered(t, p, backend, "x");
  const first = conn({ localPort: 41002, pid: 100 });
  table.open(first);
  closeConn(table, first);
  await p.cache.refresh(); // pulled into the probe's pending closes
  const second = conn({ localPort: 41002, pid: 200 });
  table.open(second);
  closeConn(table, second);
  await p.cache.refresh();
  t.same(await poll(p, "x", 41002), { closed: 2, has: true }, "both kept, one entry per connection");
  await p.cache.refresh();
  t.same(await poll(p, "x", 41002), { closed: 0, has: false });
});

t.test("each probe's delivery is its own: one probe's abandoned body takes nothing from another", async (t) => {
  const { table, backend } = makeBackend();
  const p = await plugin(t, backend);
  await httpGet(p.socketPath, path("a"));
  await httpGet(p.socketPath, path("b"));
  await eventually(() => backend.clientCount() === 2, 5000, "probes registered");
  await p.cache.refresh();
  const gone = conn({ localPort: 41003 });
  table.open(gone);
  closeConn(table, gone);
  await p.cache.refresh();
  await httpGet(p.socketPath, path("a"), "HEAD");
  t.same(await poll(p, "b", 41003), { closed: 1, has: true });
  t.same(await poll(p, "a", 41003), { closed: 1, has: true });
  await p.cache.refresh();
  t.same(await poll(p, "a", 41003), { closed: 0, has: false });
  t.same(await poll(p, "b", 41003), { closed: 0, has: false });
});
