/**
 * Under Deno: the plugin starts, a Node gRPC client gets a Report, and Scope /report answers.
 *
 * The real plugin process runs under the Deno binary from node_modules/deno:
 *
 *   node_modules/deno/deno run --allow-all plugin/main.ts --grpc-socket <tmp>/g.sock --plugins-root <tmp>/plugins ...
 *
 * --allow-all is the minimal permission set that works on a normal host, not a shortcut: Deno
 * (>= 1.43, CVE-2024-34346) refuses any read of /proc, /sys, /dev and /etc unless every
 * permission is granted unscoped, and the plugin reads /proc/sys/kernel/osrelease,
 * /sys/kernel/btf/vmlinux and, for reconcile and the fallback, every /proc/PID/fd and net/tcp*.
 * The second test below pins that down. What the code touches besides those paths:
 * read (modules, protos, /proc), write (socket dirs), env (grpc-js reads GRPC_*), net (listening
 * on Unix sockets counts as net in Deno), sys=hostname (default host id), ffi (the Node-API addon).
 */
import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ServiceError, status as GrpcStatus } from "@grpc/grpc-js";
import { type ConnectionEvent, Direction, type EndpointReport, EventType, Source, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { createTestNetwork } from "../helpers/netns.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { heapPolicy, pluginV8Flags } from "../../plugin/runtime/heap-policy.ts";
import { DENO_BIN, DENO_PERMISSIONS, ROOT, socketsPresent, startPlugin } from "../helpers/plugin-child.ts";
import { httpGet, unary } from "../helpers/server-harness.ts";

function freshDenoDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "er-deno-dir-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** npm packages Deno fetched into its own cache (none when everything comes from node_modules). */
function cachedNpmPackages(denoDir: string): string[] {
  const npm = join(denoDir, "npm");
  return existsSync(npm) ? readdirSync(npm, { recursive: true }).map(String).filter((p) => p.endsWith("package.json")) : [];
}

t.test("deno.json (nodeModulesDir manual) makes every npm import resolve from node_modules", async (t) => {
  const config = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"));
  t.equal(config.nodeModulesDir, "manual");
  const denoDir = freshDenoDir(t);
  const info = spawnSync(DENO_BIN, ["info", "--json", "plugin/main.ts"], { cwd: ROOT, env: { ...process.env, DENO_DIR: denoDir, NO_COLOR: "1" }, encoding: "utf8", timeout: 60_000 });
  t.equal(info.status, 0, info.stderr);
  const graph = JSON.parse(info.stdout) as { modules: Array<{ specifier: string }>; npmPackages?: Record<string, unknown> };
  const specifiers = graph.modules.map((m) => m.specifier);
  t.same(specifiers.filter((s) => !s.startsWith("file://") && !s.startsWith("node:")), [], "no npm:, jsr: or https: modules");
  const nodeModules = realpathSync(join(ROOT, "node_modules"));
  for (const pkg of ["@grpc/grpc-js", "@bufbuild/protobuf"]) {
    t.ok(specifiers.some((s) => s.startsWith(`file://${nodeModules}/${pkg}/`)), `${pkg} from ${nodeModules}`);
  }
  t.same(Object.keys(graph.npmPackages ?? {}), [], "nothing resolved through Deno's npm resolver");
  t.same(cachedNpmPackages(denoDir), [], "nothing fetched into DENO_DIR");
});

t.test("anything narrower than --allow-all: Deno refuses /proc and /sys, and the plugin exits 1 naming the path", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "er-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Every permission, each unscoped: still not "all" once one is missing (here --allow-import).
  const everyButAll = ["--allow-read", "--allow-write", "--allow-env", "--allow-net", "--allow-sys", "--allow-ffi", "--allow-run"];
  const run = spawnSync(DENO_BIN, ["run", "--no-prompt", ...everyButAll, "plugin/main.ts", "--grpc-socket", join(dir, "g.sock"), "--plugins-root", join(dir, "plugins")], {
    cwd: ROOT, env: { ...process.env, NO_COLOR: "1" }, encoding: "utf8", timeout: 60_000,
  });
  t.equal(run.status, 1, "a fatal start error, not a hang or a crash");
  t.match(run.stderr, /Requires all access to \\?"\/(proc|sys)\//, "the path and the permission it needs are named");
  t.notOk(existsSync(join(dir, "g.sock")), "nothing was served");
});

t.test("Under Deno: the plugin starts, a Node gRPC client gets a Report, and Scope /report answers", async (t) => {
  const denoDir = freshDenoDir(t);
  const net = createTestNetwork("d");
  t.teardown(() => net.destroy());
  // --cached-only: Deno may fetch nothing; every dependency must come from node_modules.
  const plugin = await startPlugin({ runtime: "deno", denoArgs: ["--cached-only", ...DENO_PERMISSIONS], env: { DENO_DIR: denoDir } });
  t.teardown(() => plugin.cleanup());
  t.equal(plugin.ready.source, "ebpf", `eBPF is live under Deno (${String(plugin.ready.reason)})`);
  t.equal(plugin.ready.v8OldSpaceFloorMiB, heapPolicy(pluginV8Flags()).oldSpaceFloorMiB, "the heap floor reached V8 through --v8-flags");

  const client = plugin.client();
  t.teardown(() => client.close());
  const status = await unary<TrackerStatus>((cb) => client.getStatus({}, cb));
  t.equal(status.source, Source.SOURCE_EBPF);
  const reconciledBefore = Number(status.counters?.reconcileAdded ?? 0);

  // A real connection between two test namespaces, made after the plugin started.
  const server = await startServer(net.a.name, net.a.ipv4, 8095, "hold");
  t.teardown(() => server.stop());
  const peer = startClient(net.b.name, net.a.ipv4, 8095, 1, true);
  t.teardown(() => peer.stop());
  const port = Number(await peer.line());
  t.ok(port > 0, "the client connected");

  let report: EndpointReport | undefined;
  const ends = (r: EndpointReport | undefined) => (r?.connections ?? []).filter((c) => (c.localPort === port && c.remotePort === 8095) || (c.localPort === 8095 && c.remotePort === port));
  for (const until = Date.now() + 15_000; ends(report).length < 2 && Date.now() < until;) {
    report = await unary<EndpointReport>((cb) => client.report({ clientId: "deno-test" }, cb));
    if (ends(report).length < 2) await new Promise((r) => setTimeout(r, 100));
  }
  if (ends(report).length < 2) {
    // Events counted but never applied points at the reorder window's clock (see the report).
    const counters = (await unary<TrackerStatus>((cb) => client.getStatus({}, cb))).counters;
    t.comment(`tracker counters without the connection: events ${counters?.events}, connectionsTracked ${counters?.connectionsTracked}, reordersHeldBack ${counters?.reordersHeldBack}`);
  }
  t.equal(ends(report).length, 2, "both ends of the connection in a gRPC Report");
  // Lost events are healed by a /proc reconcile, which would find the connection too: make sure
  // it came from eBPF events (a busy host can cause that loss; run this test alone).
  const after = (await unary<TrackerStatus>((cb) => client.getStatus({}, cb))).counters;
  t.equal(Number(after?.reconcileAdded ?? 0), reconciledBefore, `the connection came from eBPF events, not a /proc reconcile (events lost meanwhile: ${after?.lost})`);
  t.equal(report?.hostId, "test-host");
  t.equal(report?.status?.source, Source.SOURCE_EBPF, "the Report's status says eBPF");
  t.match(ends(report).find((c) => c.localPort === port), {
    localAddress: net.b.ipv4, remoteAddress: net.a.ipv4, remotePort: 8095, networkNamespace: net.b.netns,
    pid: peer.pid, comm: peer.comm(), direction: Direction.DIRECTION_OUTGOING, closed: false, source: Source.SOURCE_EBPF,
  }, "the client end, with the client's pid");
  t.match(ends(report).find((c) => c.localPort === 8095), {
    localAddress: net.a.ipv4, remoteAddress: net.b.ipv4, remotePort: port, networkNamespace: net.a.netns,
    pid: server.pid, comm: server.comm(), direction: Direction.DIRECTION_INCOMING, closed: false, source: Source.SOURCE_EBPF,
  }, "the server end, with the server's pid");

  // Scope's view of the same connection, from the plugin socket (bodies are rebuilt every <= 500 ms).
  const clientNode = `;${net.b.ipv4};${port}`;
  const serverNode = `;${net.a.ipv4};8095`;
  let scope: any;
  const deadline = Date.now() + 15_000;
  do {
    const reply = await httpGet(plugin.scopeSocket, "/report?api_version=1&probe_id=deno-test");
    t.equal(reply.status, 200);
    scope = JSON.parse(reply.body);
    if (scope.Endpoint?.nodes?.[clientNode] !== undefined) break;
    await new Promise((r) => setTimeout(r, 200));
  } while (Date.now() < deadline);
  const nodes = scope.Endpoint.nodes;
  t.same(nodes[clientNode]?.adjacency, [serverNode], "the client end opened it");
  t.equal(nodes[clientNode]?.latest?.pid?.value, String(peer.pid));
  t.equal(nodes[serverNode]?.latest?.pid?.value, String(server.pid));
  t.equal(scope.EndpointReporterStatus.source, "ebpf");
  t.equal(scope.Plugins[0].id, "endpoint-reporter");

  // SIGTERM with a Watch stream open: the stream ends UNAVAILABLE, the process exits 0 within 2 s.
  const watch = client.watch({ clientId: "deno-watch" });
  const watchEnded = new Promise<ServiceError | "end">((resolve) => {
    watch.on("error", (error: ServiceError) => resolve(error));
    watch.on("end", () => resolve("end"));
  });
  await new Promise<void>((resolve) => {
    watch.on("data", (event: ConnectionEvent) => {
      if (event.type === EventType.EVENT_TYPE_SNAPSHOT_COMPLETE) resolve();
    });
  });
  const stopped = await plugin.stop("SIGTERM", 10_000);
  t.same({ code: stopped.code, signal: stopped.signal }, { code: 0, signal: null }, `exit 0 (${plugin.logs.slice(-3).join(" | ")})`);
  t.ok(stopped.elapsedMs < 2000, `exited ${stopped.elapsedMs.toFixed(0)} ms after SIGTERM (< 2000)`);
  t.same(socketsPresent(plugin), { grpc: false, scope: false }, "both sockets removed");
  t.notOk(existsSync(join(plugin.dir, "plugins", "endpoint-reporter")), "the plugin's socket directory removed");
  const ended = await watchEnded;
  t.equal(ended === "end" ? "end" : ended.code, GrpcStatus.UNAVAILABLE, "the Watch stream was ended UNAVAILABLE");
  t.ok(plugin.logs.some((l) => l.includes('"msg":"stopped"')), "logged stopped");
  t.same(cachedNpmPackages(denoDir), [], "nothing fetched into DENO_DIR");
});
