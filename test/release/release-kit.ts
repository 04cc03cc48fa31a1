/**
 * What the release proofs share: the tarball (npm pack, cached by its inputs in build/release/), a
 * Debian 12 root with the runtime libraries only (mmdebstrap, cached by its inputs outside the
 * checkout), that root with the host's Node added, the plugin run chrooted in it, a scenario of real
 * connections in test namespaces, and the rows a gRPC or Scope client on the host reads back.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { credentials } from "@grpc/grpc-js";
import { Direction, type EndpointReport, EndpointReporterClient, Source, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { createTestNetwork, type TestNetwork } from "../helpers/netns.ts";
import { type Peer, startClient, startServer } from "../helpers/peers.ts";
import { httpGet, unary } from "../helpers/server-harness.ts";
import { waitFor } from "../helpers/wait.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** Outside the checkout, so that CI's fresh clones reuse it; one file per set of inputs. */
export const CACHE_DIR = "/var/cache/scope-endpoint-reporter-release";
/** Where the package is installed in the root, the image and the systemd unit alike. */
export const INSTALL_PREFIX = "/opt/endpoint-reporter";
export const BIN = `${INSTALL_PREFIX}/node_modules/.bin/endpoint-reporter`;
/** Tools a release host must not need; none may exist in the root. */
export const BUILD_TOOLS = ["cc", "gcc", "g++", "c++", "clang", "make", "python3"];

const sh = (command: string, args: string[], options: { cwd?: string; input?: string } = {}): string =>
  execFileSync(command, args, { cwd: options.cwd, input: options.input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"], maxBuffer: 64 << 20 });

/** Installs whichever of `packages` is missing (Debian's apt), as the tests' own setup. */
export function aptEnsure(packages: readonly string[]): void {
  const missing = packages.filter((p) => {
    try {
      return !sh("dpkg-query", ["-W", "-f=${Status}", p]).includes("install ok installed");
    } catch {
      return true;
    }
  });
  if (missing.length === 0) return;
  execFileSync("apt-get", ["update", "-qq"], { stdio: "ignore" });
  execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
}

/** The shared libraries the package declares (scripts/release/runtime-libraries, the one list). */
export function runtimeLibraries(): string[] {
  return readFileSync(join(ROOT, "scripts/release/runtime-libraries"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
}

function hashFiles(files: readonly string[], extra: string): string {
  const hash = createHash("sha256").update(extra);
  for (const file of [...files].sort()) {
    hash.update(file).update("\0");
    if (existsSync(join(ROOT, file))) hash.update(readFileSync(join(ROOT, file)));
  }
  return hash.digest("hex").slice(0, 16);
}

/** `npm pack` of this checkout (prepack runs `npm run build`), reused while its inputs are unchanged. */
export function releaseTarball(): string {
  const inputs = sh("git", ["ls-files", "-co", "--exclude-standard", "--", "package.json", "package-lock.json", "tsconfig.json", "plugin", "proto", "bpf", "native", "scripts/release", "scripts/setup.sh", "scripts/build-bpf.sh", "scripts/build-native.sh"], { cwd: ROOT })
    .split("\n").filter((f) => f !== "");
  const key = hashFiles(inputs, process.version);
  const dir = join(ROOT, "build/release");
  const tarball = join(dir, `scope-endpoint-reporter-${key}.tgz`);
  if (existsSync(tarball)) return tarball;
  mkdirSync(dir, { recursive: true });
  const staging = mkdtempSync(join(dir, "pack-"));
  try {
    const name = sh("npm", ["pack", "--silent", "--pack-destination", staging], { cwd: ROOT }).trim().split("\n").pop()!;
    renameSync(join(staging, name), tarball);
    // Tarballs of earlier inputs are never asked for again.
    for (const old of readdirSync(dir)) if (old.endsWith(".tgz") && join(dir, old) !== tarball) rmSync(join(dir, old), { force: true });
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return tarball;
}

/** What the root is made of: the declared libraries, plus certificates and iproute2 (`ip`, `ss`). */
function rootRecipe(): { args: string[]; key: string } {
  const sources = "/etc/apt/sources.list.d/debian.sources";
  const include = [...runtimeLibraries(), "ca-certificates", "iproute2"];
  const args = ["--variant=essential", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr", `--include=${include.join(",")}`, "bookworm"];
  const key = createHash("sha256").update(JSON.stringify(args)).update(readFileSync(sources)).update(sh("mmdebstrap", ["--version"])).digest("hex").slice(0, 16);
  return { args: [...args, "%OUT%", sources], key };
}

/** The Debian 12 root as a tarball (mmdebstrap, the host's apt sources), built once per recipe. */
export function debianRootTarball(): string {
  aptEnsure(["mmdebstrap"]);
  const recipe = rootRecipe();
  const tarball = join(CACHE_DIR, `debian12-root-${recipe.key}.tar`);
  if (existsSync(tarball)) return tarball;
  mkdirSync(CACHE_DIR, { recursive: true });
  const partial = `${tarball}.partial-${process.pid}.tar`;
  try {
    execFileSync("mmdebstrap", ["--quiet", ...recipe.args.map((a) => (a === "%OUT%" ? partial : a))], { stdio: ["ignore", "ignore", "inherit"] });
    renameSync(partial, tarball);
  } finally {
    rmSync(partial, { force: true });
  }
  return tarball;
}

/** Shared libraries `binary` loads (ldd), as absolute paths on the host. */
function sharedLibraries(binary: string): string[] {
  return sh("ldd", [binary]).split("\n").map((line) => /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line)?.[1]).filter((p): p is string => p !== undefined);
}

export interface NodeRoot {
  dir: string;
  /** Libraries node needed that the root lacked, copied in from the host. */
  copiedLibraries: string[];
  remove(): void;
}

/**
 * A fresh copy of the root with the host's Node runtime added (the binary, npm, and whatever `ldd`
 * says the binary needs that the root lacks): what a host with only Node >= 20 installed looks like.
 */
export function nodeRoot(): NodeRoot {
  const tarball = debianRootTarball();
  const dir = mkdtempSync("/var/tmp/endpoint-reporter-release-root-");
  const remove = () => rmSync(dir, { recursive: true, force: true });
  try {
    execFileSync("tar", ["-xf", tarball, "-C", dir]);
    const node = realpathSync(process.execPath);
    copyFileSync(node, join(dir, "usr/bin/node"));
    execFileSync("chmod", ["0755", join(dir, "usr/bin/node")]);
    const copiedLibraries: string[] = [];
    for (const lib of sharedLibraries(node)) {
      const inRoot = join(dir, lib.replace(/^\/lib(64)?\//, "/usr/lib$1/"));
      if (existsSync(inRoot) || existsSync(join(dir, lib))) continue;
      mkdirSync(dirname(inRoot), { recursive: true });
      copyFileSync(lib, inRoot);
      copiedLibraries.push(lib);
    }
    const npm = join(dirname(dirname(node)), "lib/node_modules/npm");
    cpSync(npm, join(dir, "usr/lib/node_modules/npm"), { recursive: true, dereference: true });
    symlinkSync("../lib/node_modules/npm/bin/npm-cli.js", join(dir, "usr/bin/npm"));
    symlinkSync("../lib/node_modules/npm/bin/npx-cli.js", join(dir, "usr/bin/npx"));
    return { dir, copiedLibraries, remove };
  } catch (error) {
    remove();
    throw error;
  }
}

/** `npm install` of the tarball inside the root, offline with an empty cache: nothing to fetch, nothing to compile. */
export function installTarballInRoot(rootDir: string, tarball: string): string {
  copyFileSync(tarball, join(rootDir, "tmp/endpoint-reporter.tgz"));
  const out = sh("chroot", [rootDir, "/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root",
    "npm", "install", "--prefix", INSTALL_PREFIX, "--offline", "--cache", "/tmp/npm-empty-cache", "--no-audit", "--no-fund", "--omit=dev", "/tmp/endpoint-reporter.tgz"]);
  rmSync(join(rootDir, "tmp/endpoint-reporter.tgz"));
  rmSync(join(rootDir, "tmp/npm-empty-cache"), { recursive: true, force: true });
  return out;
}

/** Which of BUILD_TOOLS the root has, looked up inside it. */
export function buildToolsIn(rootDir: string): string[] {
  return BUILD_TOOLS.filter((tool) => {
    try {
      sh("chroot", [rootDir, "/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "/bin/sh", "-c", `command -v ${tool}`]);
      return true;
    } catch {
      return false;
    }
  });
}

/** Where a plugin's sockets are seen from the host: `runDir` is what it has as /var/run/scope. */
/** The systemd unit's CapabilityBoundingSet as a setpriv command that applies it (setpriv runs in the root). */
export function unitBoundingSet(): { capabilities: string[]; wrapper: string[] } {
  const unit = readFileSync(join(ROOT, "scripts/deploy/endpoint-reporter.service"), "utf8");
  const line = /^CapabilityBoundingSet=(.*)$/m.exec(unit);
  if (line === null) throw new Error("the unit has no CapabilityBoundingSet");
  const capabilities = line[1].trim().split(/\s+/);
  const names = capabilities.map((c) => `+${c.replace(/^CAP_/, "").toLowerCase()}`);
  return { capabilities, wrapper: ["/usr/bin/setpriv", `--bounding-set=-all,${names.join(",")}`, "--"] };
}

export function socketsUnder(runDir: string): { grpc: string; scope: string } {
  return { grpc: join(runDir, "endpoint-reporter.sock"), scope: join(runDir, "plugins/endpoint-reporter/endpoint-reporter.sock") };
}

export interface RunningPlugin {
  child: ChildProcess;
  logs: string[];
  ready: Record<string, unknown>;
  stop(): Promise<number | null>;
}

/** Spawns a plugin command and waits for its `ready` log record. */
export async function spawnUntilReady(command: string, args: readonly string[], what: string, env: NodeJS.ProcessEnv = process.env, timeoutMs = 60_000): Promise<RunningPlugin> {
  const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let onReady: ((r: Record<string, unknown>) => void) | undefined;
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (line) => {
      logs.push(line);
      if (line.includes('"msg":"ready"')) onReady?.(JSON.parse(line));
    });
  }
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  try {
    const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: not ready after ${timeoutMs} ms:\n${logs.slice(-20).join("\n")}`)), timeoutMs);
      onReady = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`${what}: exited (${code}) before ready:\n${logs.slice(-20).join("\n")}`));
      });
    });
    return { child, logs, ready, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * The installed bin chrooted in the root, in a mount namespace of its own (so nothing stays mounted
 * after it): /proc, /sys (with /sys/fs/bpf and tracefs), /dev from the host, and `runDir` as its
 * /var/run/scope, where both sockets are made at their default paths.
 */
export function chrootPlugin(rootDir: string, runDir: string, args: readonly string[] = [], wrapper: readonly string[] = []): Promise<RunningPlugin> {
  const script = [
    'set -e; r="$1"; d="$2"; shift 2',
    'mount --bind /proc "$r/proc"',
    'mount --rbind /sys "$r/sys"',
    'mount --bind /sys/fs/bpf "$r/sys/fs/bpf"',
    'mount --rbind /dev "$r/dev"',
    'mkdir -p "$r/run/scope"; mount --bind "$d" "$r/run/scope"',
    'exec chroot "$r" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root "$@"',
  ].join("\n");
  return spawnUntilReady("unshare", ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "chroot-plugin", rootDir, runDir, ...wrapper, BIN, ...args], "plugin chrooted in the bare root");
}

export interface Scenario {
  net: TestNetwork;
  servers: Peer[];
  clients: Peer[];
  ports: number[];
  /** The rows every tracker must report, from what the peers are. */
  expected: Row[];
  stop(): Promise<void>;
}

/** One normalised connection end: what a user compares between two installs. */
export interface Row {
  local: string;
  remote: string;
  pid: number;
  comm: string;
  direction: "in" | "out";
  netns: number;
}

const SCENARIO_PORT = 8712;
const RELEASE_SUBNET = 212;
let scenarios = 0;
const hostPort = (address: string, port: number) => `${address}:${port}`;

/** Servers in namespace a holding a connection each from namespace b, one over IPv4, one over IPv6. */
export async function startScenario(tag: string): Promise<Scenario> {
  // Addresses no other test uses (those count up from 10.100): Scope's node ids carry no namespace.
  const net = createTestNetwork(tag, RELEASE_SUBNET + (scenarios++ % 20));
  const peers: Peer[] = [];
  const stop = async () => {
    await Promise.all(peers.map((p) => p.stop()));
    net.destroy();
  };
  try {
    const servers: Peer[] = [];
    const clients: Peer[] = [];
    const ports: number[] = [];
    const expected: Row[] = [];
    for (const [from, to, serverPort] of [[net.b.ipv4, net.a.ipv4, SCENARIO_PORT], [net.b.ipv6, net.a.ipv6, SCENARIO_PORT + 1]] as const) {
      const server = await startServer(net.a.name, to, serverPort, "hold");
      peers.push(server);
      servers.push(server);
      const client = startClient(net.b.name, to, serverPort, 1, true);
      peers.push(client);
      clients.push(client);
      const port = Number(await client.line());
      ports.push(port);
      expected.push({ local: hostPort(from, port), remote: hostPort(to, serverPort), pid: client.pid, comm: client.comm(), direction: "out", netns: net.b.netns });
      expected.push({ local: hostPort(to, serverPort), remote: hostPort(from, port), pid: server.pid, comm: server.comm(), direction: "in", netns: net.a.netns });
    }
    return { net, servers, clients, ports, expected: sortRows(expected), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

function sortRows(rows: Row[]): Row[] {
  return rows.sort((x, y) => `${x.local} ${x.remote}`.localeCompare(`${y.local} ${y.remote}`));
}

export function grpcClient(socket: string): EndpointReporterClient {
  return new EndpointReporterClient(`unix://${socket}`, credentials.createInsecure());
}

/** The scenario's rows as a gRPC client reads them, and the status beside them. */
export async function grpcRows(socket: string, scenario: Pick<Scenario, "ports" | "net">): Promise<{ rows: Row[]; status: TrackerStatus; sources: Source[] }> {
  const client = grpcClient(socket);
  const namespaces = [scenario.net.a.netns, scenario.net.b.netns];
  try {
    const report = await unary<EndpointReport>((cb) => client.report({ clientId: "" }, cb));
    const ours = report.connections.filter((c) => namespaces.includes(c.networkNamespace) && (scenario.ports.includes(c.localPort) || scenario.ports.includes(c.remotePort)));
    const rows = ours.map((c) => ({
      local: hostPort(c.localAddress, c.localPort),
      remote: hostPort(c.remoteAddress, c.remotePort),
      pid: c.pid,
      comm: c.comm,
      direction: c.direction === Direction.DIRECTION_INCOMING ? "in" as const : "out" as const,
      netns: c.networkNamespace,
    }));
    return { rows: sortRows(rows), status: report.status!, sources: ours.map((c) => c.source) };
  } finally {
    client.close();
  }
}

/** Scope's view of the scenario: the Endpoint nodes of its addresses, with pid and adjacency. */
export async function scopeRows(socket: string, addresses: readonly string[]): Promise<{ nodes: string[]; description: string }> {
  const reply = await httpGet(socket, "/report?api_version=1&probe_id=release-proof");
  if (reply.status !== 200) throw new Error(`/report answered ${reply.status}`);
  const body = JSON.parse(reply.body) as { Endpoint: { nodes: Record<string, { adjacency?: string[]; latest?: Record<string, { value: string }> }> }; Plugins: Array<{ description: string }> };
  const nodes = Object.entries(body.Endpoint.nodes)
    .filter(([id]) => addresses.some((a) => id.includes(`;${a};`)))
    .map(([id, node]) => `${id} pid=${node.latest?.pid?.value ?? "-"} -> ${(node.adjacency ?? []).sort().join(",")}`)
    .sort();
  return { nodes, description: body.Plugins.map((p) => p.description).join(" | ") };
}

/** Waits until a tracker reports every row of the scenario; returns what it reported. */
export async function awaitScenarioRows(socket: string, scenario: Scenario, timeoutMs = 20_000): Promise<Awaited<ReturnType<typeof grpcRows>>> {
  let last: Awaited<ReturnType<typeof grpcRows>> | undefined;
  let pending = false;
  await waitFor("the scenario's rows over gRPC", () => {
    if (!pending) {
      pending = true;
      grpcRows(socket, scenario).then((r) => (last = r), () => undefined).finally(() => (pending = false));
    }
    return last !== undefined && last.rows.length >= scenario.expected.length;
  }, timeoutMs, 200);
  return last!;
}

export const SCENARIO_SOURCE_EBPF = Source.SOURCE_EBPF;
export const SCENARIO_SOURCE_PROCFS = Source.SOURCE_PROCFS;

/** Size of a directory tree in bytes (du). */
export function treeBytes(path: string): number {
  return Number(sh("du", ["-sb", path]).split("\t")[0]);
}

export function fileBytes(path: string): number {
  return statSync(path).size;
}

export function listDir(path: string): string[] {
  return existsSync(path) ? readdirSync(path) : [];
}

/** Asks /report as a probe does (every second here) until the scenario's `count` nodes are in it. */
export async function awaitScopeNodes(socket: string, addresses: readonly string[], count: number, timeoutMs = 20_000): Promise<Awaited<ReturnType<typeof scopeRows>>> {
  let last: Awaited<ReturnType<typeof scopeRows>> | undefined;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    last = await scopeRows(socket, addresses);
    if (last.nodes.length >= count || Date.now() > deadline) return last;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
