/**
 * The release on a host that has nothing but Debian 12's runtime libraries and a Node binary: the
 * npm pack tarball installs there offline with no compiler, and the installed bin, chrooted in that
 * root, tracks real connections in test namespaces with eBPF, with the right pids, over gRPC and
 * Scope's /report read from the host side of the sockets.
 */
import t from "tap";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { pluginGlibcTunables } from "../../plugin/runtime/allocator-policy.ts";
import { heapPolicy, pluginV8Flags } from "../../plugin/runtime/heap-policy.ts";
import {
  BIN, BUILD_TOOLS, INSTALL_PREFIX, SCENARIO_SOURCE_EBPF, awaitScenarioRows, buildToolsIn, chrootPlugin, installTarballInRoot,
  listDir, nodeRoot, releaseTarball, runtimeLibraries, awaitScopeNodes, unitBoundingSet, socketsUnder, startScenario,
} from "./release-kit.ts";

t.setTimeout(900_000);

t.test("the tarball installs offline in a bare Debian 12 root and its bin tracks real connections there with eBPF", async (t) => {
  const tarball = releaseTarball();
  const root = nodeRoot();
  t.teardown(() => root.remove());
  t.same(root.copiedLibraries, [], "the root already has every library node needs (ldd)");

  for (const lib of runtimeLibraries()) {
    t.ok(readFileSync(`${root.dir}/var/lib/dpkg/status`, "utf8").includes(`Package: ${lib}\n`), `the root has ${lib}`);
  }
  t.same(buildToolsIn(root.dir), [], `none of ${BUILD_TOOLS.join(", ")} in the root`);

  installTarballInRoot(root.dir, tarball);
  const pkg = `${root.dir}${INSTALL_PREFIX}/node_modules/scope-endpoint-reporter`;
  t.same(listDir(`${pkg}/dist/build`).filter((f) => f.endsWith(".bpf.o")).sort(), listDir("build").filter((f) => f.endsWith(".bpf.o")).sort(), "every CO-RE object is in the package");
  t.ok(listDir(`${pkg}/dist/build/Release`).includes("scope_tracker.node"), "the addon is in the package");
  t.notOk(listDir(`${root.dir}${INSTALL_PREFIX}/node_modules`).includes("tsx"), "no tsx installed");
  t.same(buildToolsIn(root.dir), [], "still no build tool after the install");

  const runDir = mkdtempSync("/tmp/endpoint-reporter-release-run-");
  t.teardown(() => rmSync(runDir, { recursive: true, force: true }));
  const plugin = await chrootPlugin(root.dir, runDir, ["--reconcile-interval-ms", "600000"]);
  t.teardown(() => plugin.stop());

  t.equal(plugin.ready.source, "ebpf", `${BIN} came up on eBPF`);
  t.equal(plugin.ready.glibcTunables, pluginGlibcTunables(), "the bin set the plugin's glibc tunables, as scripts/start.sh does");
  t.equal(plugin.ready.v8OldSpaceFloorMiB, heapPolicy(pluginV8Flags()).oldSpaceFloorMiB, "the bin gave node the plugin's V8 flags");

  // Opened after the plugin is up, so that eBPF, not the start-up /proc seed, reports them.
  const scenario = await startScenario("rel");
  t.teardown(() => scenario.stop());

  const sockets = socketsUnder(runDir);
  const seen = await awaitScenarioRows(sockets.grpc, scenario);
  t.same(seen.rows, scenario.expected, "gRPC: both ends of both connections, with the peers' pids, directions and namespaces");
  t.ok(seen.sources.every((s) => s === SCENARIO_SOURCE_EBPF), "every row came from eBPF (opened after start)");
  t.equal(seen.status.source, SCENARIO_SOURCE_EBPF, "status: eBPF live");

  const scope = await awaitScopeNodes(sockets.scope, [scenario.net.a.ipv4, scenario.net.a.ipv6, scenario.net.b.ipv4, scenario.net.b.ipv6], 4);
  const clientPid = (i: number) => scenario.clients[i].pid;
  const serverPid = (i: number) => scenario.servers[i].pid;
  t.equal(scope.nodes.length, 4, `Scope: four endpoint nodes\n${scope.nodes.join("\n")}`);
  for (const [i, [from, to]] of [[scenario.net.b.ipv4, scenario.net.a.ipv4], [scenario.net.b.ipv6, scenario.net.a.ipv6]].entries()) {
    t.ok(scope.nodes.some((n) => n.includes(`;${from};${scenario.ports[i]} pid=${clientPid(i)} -> `) && n.includes(`;${to};`)), `Scope: the opening side ${from} with pid ${clientPid(i)}, adjacent to ${to}`);
    t.ok(scope.nodes.some((n) => n.includes(`;${to};`) && n.includes(` pid=${serverPid(i)} `)), `Scope: the accepting side ${to} with pid ${serverPid(i)}`);
  }
  t.match(scope.description, /ebpf/i, "the plugin's description says eBPF is live");

  t.equal(await plugin.stop(), 0, "SIGTERM: exit 0");

  // The systemd unit's CapabilityBoundingSet is enough: eBPF, and the same rows.
  const bounded = unitBoundingSet();
  const boundedDir = mkdtempSync("/tmp/endpoint-reporter-release-run-");
  t.teardown(() => rmSync(boundedDir, { recursive: true, force: true }));
  const limited = await chrootPlugin(root.dir, boundedDir, ["--reconcile-interval-ms", "600000"], bounded.wrapper);
  t.teardown(() => limited.stop());
  t.equal(limited.ready.source, "ebpf", `eBPF live with only ${bounded.capabilities.join(" ")}`);
  const limitedSeen = await awaitScenarioRows(socketsUnder(boundedDir).grpc, scenario);
  t.same(limitedSeen.rows, scenario.expected, "the same rows with the unit's capabilities");
  t.equal(await limited.stop(), 0);
});
