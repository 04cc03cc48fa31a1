/**
 * The deployment files in scripts/deploy/: the systemd unit passes `systemd-analyze verify` against
 * a real install of the tarball, and the DaemonSet is the podman run the container test makes
 * (host pid and network, the same host paths at the same places, the least privilege found).
 */
import t from "tap";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { deploymentRun, PRIVILEGE_ARGS } from "./podman-kit.ts";
import { aptEnsure, INSTALL_PREFIX, releaseTarball, ROOT, socketsUnder, spawnUntilReady } from "./release-kit.ts";
import { DENO_BIN } from "../helpers/plugin-child.ts";
import { pluginGlibcTunables } from "../../plugin/runtime/allocator-policy.ts";

const UNIT = join(ROOT, "scripts/deploy/endpoint-reporter.service");
const DAEMONSET = join(ROOT, "scripts/deploy/endpoint-reporter-daemonset.yaml");

function verify(unitPath: string): { ok: boolean; output: string } {
  try {
    return { ok: true, output: execFileSync("systemd-analyze", ["verify", "--man=no", unitPath], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }) };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    return { ok: false, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

t.test("the systemd unit verifies against an install of the tarball", async (t) => {
  aptEnsure(["systemd"]);
  const prefix = mkdtempSync("/var/tmp/endpoint-reporter-release-prefix-");
  t.teardown(() => rmSync(prefix, { recursive: true, force: true }));
  execFileSync("npm", ["install", "--prefix", prefix, "--offline", "--cache", join(prefix, ".empty-cache"), "--no-audit", "--no-fund", "--omit=dev", releaseTarball()], { stdio: "ignore" });
  // The unit as written, with the install prefix of this test in place of /opt/endpoint-reporter.
  const unit = readFileSync(UNIT, "utf8");
  t.match(unit, `ExecStart=${INSTALL_PREFIX}/node_modules/.bin/endpoint-reporter`, "the unit starts the package's bin");
  const dir = mkdtempSync("/tmp/endpoint-reporter-release-unit-");
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const here = join(dir, "endpoint-reporter.service");
  writeFileSync(here, unit.replaceAll(INSTALL_PREFIX, prefix));
  const result = verify(here);
  t.ok(result.ok, `systemd-analyze verify: ${result.output || "clean"}`);
  t.equal(result.output.trim(), "", "no warning");

  // The same install under Deno 2 (the package's JavaScript, as README "Deploy" says), read by the CLI bin.
  const pkg = join(prefix, "node_modules/scope-endpoint-reporter");
  const runDir = mkdtempSync("/tmp/endpoint-reporter-release-run-");
  t.teardown(() => rmSync(runDir, { recursive: true, force: true }));
  const sockets = socketsUnder(runDir);
  const deno = await spawnUntilReady("sh", ["-c", 'cd "$1" && shift && exec "$@"', "deno-release", pkg, DENO_BIN, "run", "--allow-all", "--v8-flags=--initial-old-space-size=64,--single-threaded-gc", "dist/plugin/main.js",
    "--grpc-socket", sockets.grpc, "--plugins-root", join(runDir, "plugins"), "--reconcile-interval-ms", "600000"], "the release under Deno", { ...process.env, GLIBC_TUNABLES: pluginGlibcTunables() });
  t.teardown(() => deno.stop());
  t.equal(deno.ready.source, "ebpf", "Deno runs the release's JavaScript, eBPF live");
  const status = execFileSync(join(prefix, "node_modules/.bin/endpoint-reporter-cli"), ["--socket", sockets.grpc, "--json", "status"], { encoding: "utf8" });
  t.match(JSON.parse(status), { source: /EBPF/i }, "the CLI bin reads its status");
  await deno.stop();

  rmSync(join(prefix, "node_modules/.bin/endpoint-reporter"));
  const broken = verify(here);
  t.notOk(broken.ok, "and it fails once the bin is gone");
  t.match(broken.output, /not executable/);
});

t.test("the DaemonSet mirrors the tested podman run (deploymentRun, sys-admin)", async (t) => {
  const ds = parse(readFileSync(DAEMONSET, "utf8"));
  t.equal(ds.kind, "DaemonSet");
  const pod = ds.spec.template.spec;
  const run = deploymentRun("sys-admin");
  t.ok(run.includes("--pid=host") && pod.hostPID === true, "hostPID, like --pid=host");
  t.ok(run.includes("--network=host") && pod.hostNetwork === true, "hostNetwork, like --network=host");
  t.equal(pod.containers.length, 1);
  const container = pod.containers[0];
  t.equal(container.command, undefined, "the image's entrypoint, as in the podman run");
  t.equal(container.args, undefined, "no flags beyond the image's defaults, as in the podman run");
  const volumes = new Map<string, string>(pod.volumes.map((v: { name: string; hostPath: { path: string } }) => [v.name, v.hostPath.path]));
  const mounts = container.volumeMounts.map((m: { name: string; mountPath: string; readOnly?: boolean }) => `${volumes.get(m.name)}:${m.mountPath}${m.readOnly ? ":ro" : ""}`).sort();
  const podmanMounts: string[] = [];
  for (let i = 0; i < run.length; i++) if (run[i] === "--volume") podmanMounts.push(run[i + 1]);
  t.same(mounts, podmanMounts.sort(), "the same host paths at the same places");
  const added: string[] = [];
  const sysAdmin = PRIVILEGE_ARGS["sys-admin"];
  for (let i = 0; i < sysAdmin.length; i++) if (sysAdmin[i] === "--cap-add") added.push(sysAdmin[i + 1]);
  t.equal(container.securityContext.privileged, false, "not privileged");
  t.same(container.securityContext.capabilities.add, added, "the capabilities of the least-privilege run");
});
