/**
 * The release image (scripts/release/Containerfile), built offline with podman on a local base made
 * from the bare root plus node, run the way Scope's probe container runs. A Scope-style client on the
 * host, through the Unix sockets under the shared /var/run/scope, gets the same rows from it as from
 * the bare-root install watching the same connections. Then the least privilege that still gives
 * eBPF, and what the container does with none of it.
 */
import t from "tap";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { unary } from "../helpers/server-harness.ts";
import { deploymentRun, PRIVILEGES, type Privilege, startPodman, ULIMITS } from "./podman-kit.ts";
import {
  SCENARIO_SOURCE_EBPF, SCENARIO_SOURCE_PROCFS, awaitScenarioRows, awaitScopeNodes, chrootPlugin, grpcClient, installTarballInRoot,
  nodeRoot, releaseTarball, type RunningPlugin, socketsUnder, spawnUntilReady, startScenario,
} from "./release-kit.ts";

const BASE = "localhost/endpoint-reporter-release-base:test";
const IMAGE = "localhost/endpoint-reporter-release:test";

/** Chain names in every iptables table: podman must leave them as they were. */
function iptablesChains(): string {
  return execFileSync("iptables-save", { encoding: "utf8" }).split("\n").filter((l) => l.startsWith(":") || l.startsWith("*")).map((l) => l.split(" ")[0]).sort().join("\n");
}

t.setTimeout(900_000);

t.test("the image, run like Scope's probe, and its least privilege", async (t) => {
  const chainsBefore = iptablesChains();
  const tarball = releaseTarball();
  const root = nodeRoot();
  t.teardown(() => root.remove());
  const podman = startPodman();
  t.teardown(() => podman.destroy());

  podman.importRoot(root.dir, BASE);
  podman.buildImage(tarball, IMAGE, BASE);
  t.comment(`image ${IMAGE}: ${(podman.imageBytes(IMAGE) / 1e6).toFixed(0)} MB (base ${(podman.imageBytes(BASE) / 1e6).toFixed(0)} MB)`);
  installTarballInRoot(root.dir, tarball);

  let containers = 0;
  // Detached, its log followed: podman 4.3's attached run waits 20 s for conmon after the exit here.
  const runContainer = async (privilege: Privilege, runDir: string): Promise<RunningPlugin> => {
    const name = `endpoint-reporter-release-${process.pid}-${containers++}`;
    podman.run(["run", "--detach", "--name", name, ...ULIMITS, ...deploymentRun(privilege, runDir), IMAGE, "--reconcile-interval-ms", "600000", "--ebpf-retry-ms", "600000"]);
    const logs = await spawnUntilReady("podman", ["logs", "--follow", name], `container (${privilege})`, podman.env);
    let stopped: Promise<number> | undefined;
    return {
      ...logs,
      stop: () => (stopped ??= (async () => {
        try {
          podman.run(["stop", "--time", "5", name]);
          return Number(podman.run(["inspect", "--format", "{{.State.ExitCode}}", name]).trim());
        } finally {
          podman.run(["rm", "--force", name]);
          await logs.stop();
        }
      })()),
    };
  };
  const tempRun = () => {
    const dir = mkdtempSync("/tmp/endpoint-reporter-release-run-");
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
  };

  await t.test("privileged, host pid and network: the same rows as the bare-root install", async (t) => {
    const bareDir = tempRun();
    const containerDir = tempRun();
    const bare = await chrootPlugin(root.dir, bareDir, ["--reconcile-interval-ms", "600000"]);
    t.teardown(() => bare.stop());
    const container = await runContainer("privileged", containerDir);
    t.teardown(() => container.stop());
    t.equal(container.ready.source, "ebpf", "the container came up on eBPF");

    const scenario = await startScenario("rec");
    t.teardown(() => scenario.stop());
    const fromContainer = await awaitScenarioRows(socketsUnder(containerDir).grpc, scenario);
    const fromBare = await awaitScenarioRows(socketsUnder(bareDir).grpc, scenario);
    t.same(fromContainer.rows, scenario.expected, "gRPC from the container: both ends, the peers' host pids");
    t.same(fromContainer.rows, fromBare.rows, "gRPC: the same rows as the bare root");
    t.ok(fromContainer.sources.every((s) => s === SCENARIO_SOURCE_EBPF), "from eBPF");

    const addresses = [scenario.net.a.ipv4, scenario.net.a.ipv6, scenario.net.b.ipv4, scenario.net.b.ipv6];
    const scopeContainer = await awaitScopeNodes(socketsUnder(containerDir).scope, addresses, 4);
    const scopeBare = await awaitScopeNodes(socketsUnder(bareDir).scope, addresses, 4);
    t.equal(scopeContainer.nodes.length, 4, `Scope /report from the container\n${scopeContainer.nodes.join("\n")}`);
    t.same(scopeContainer.nodes, scopeBare.nodes, "Scope /report: the same nodes, pids and adjacency as the bare root");
    for (const peer of [...scenario.clients, ...scenario.servers]) {
      t.ok(scopeContainer.nodes.some((n) => n.includes(` pid=${peer.pid} `)), `pid ${peer.pid} in Scope's report`);
    }
    t.equal(await container.stop(), 0, "SIGTERM through podman: exit 0");
  });

  for (const privilege of PRIVILEGES) {
    await t.test(`${privilege.name}: ${privilege.expect === "ebpf" ? "eBPF live" : "falls back to /proc and says why"}`, async (t) => {
      const dir = tempRun();
      const container = await runContainer(privilege.name, dir);
      t.teardown(() => container.stop());
      const client = grpcClient(socketsUnder(dir).grpc);
      t.teardown(() => client.close());
      const status = await unary<TrackerStatus>((cb) => client.getStatus({}, cb));
      if (privilege.expect === "ebpf") {
        t.equal(status.source, SCENARIO_SOURCE_EBPF, `eBPF live (${status.reason})`);
      } else {
        t.equal(status.source, SCENARIO_SOURCE_PROCFS, "on /proc");
        t.match(status.reason, privilege.reason!, `the reason says why: ${status.reason}`);
      }
      if (privilege.expect === "procfs") {
        const scope = await awaitScopeNodes(socketsUnder(dir).scope, [], 0);
        t.match(scope.description, /\/proc/i, `Scope's plugin description says /proc: ${scope.description}`);
      }
      if (!privilege.rows) return;
      const scenario = await startScenario("rlp");
      t.teardown(() => scenario.stop());
      const seen = await awaitScenarioRows(socketsUnder(dir).grpc, scenario);
      t.same(seen.rows, scenario.expected, "every end of the scenario with its pid");
      const want = privilege.expect === "ebpf" ? SCENARIO_SOURCE_EBPF : SCENARIO_SOURCE_PROCFS;
      t.ok(seen.sources.every((s) => s === want), `rows from ${privilege.expect}`);
    });
  }

  await t.test("nothing left behind by podman", async (t) => {
    t.equal(podman.run(["ps", "--all", "--quiet"]).trim(), "", "no container left");
    t.equal(iptablesChains(), chainsBefore, "no iptables chain added or removed");
  });
});
