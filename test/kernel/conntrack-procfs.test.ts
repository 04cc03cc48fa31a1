/**
 * Conntrack where the plugin has no eBPF (the /proc fallback), and where it has no conntrack:
 * - connections that open and close between two scans reach a client once each, closed, from
 *   conntrack (pid 0: no scan saw their process), seen from the connecting side;
 * - conntrack's original direction decides a connection no listening socket explains, against the
 *   port heuristic;
 * - without CAP_NET_ADMIN, or with conntrack events switched off, reports go on as before and
 *   the status says that NAT mapping is off and why.
 */
import t from "tap";
import { spawn } from "node:child_process";
import type { ServiceError } from "@grpc/grpc-js";
import { Direction, type EndpointReport, Source, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { createNatNetwork, type NatNetwork } from "../helpers/nat-network.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { type PluginProcess, startPlugin } from "../helpers/plugin-child.ts";
import { httpGet } from "../helpers/server-harness.ts";
import { waitFor } from "../helpers/wait.ts";

type Tap = { teardown(fn: () => unknown): void };

async function setUp(t: Tap, args: string[], wrapperTail: string[] = [], before?: (net: NatNetwork) => void): Promise<{ net: NatNetwork; plugin: PluginProcess; api: ReturnType<typeof grpc> }> {
  const net = createNatNetwork();
  t.teardown(() => net.destroy());
  // A Service rule, as on any kube-proxy host: it is also what makes the kernel track connections here.
  net.dnat(4, 80, 8080);
  before?.(net);
  const plugin = await startPlugin({ runtime: "node", readyTimeoutMs: 180_000, wrapper: ["ip", "netns", "exec", net.router.name, ...wrapperTail], args });
  t.teardown(() => plugin.cleanup());
  const api = grpc(plugin);
  t.teardown(() => api.close());
  return { net, plugin, api };
}

function grpc(plugin: PluginProcess) {
  const client = plugin.client();
  return {
    report: (clientId: string) => new Promise<EndpointReport>((resolve, reject) => client.report({ clientId }, (e: ServiceError | null, r?: EndpointReport) => (e ? reject(e) : resolve(r!)))),
    status: () => new Promise<TrackerStatus>((resolve, reject) => client.getStatus({}, (e: ServiceError | null, r?: TrackerStatus) => (e ? reject(e) : resolve(r!)))),
    close: () => client.close(),
  };
}

t.test("/proc source: connections opened and closed between two scans are reported once each, closed", async (t) => {
  const { net, api } = await setUp(t, ["--source", "procfs", "--proc-poll-interval-ms", "1000"]);
  const server = await startServer(net.server.name, net.server.ipv4, 8080, "close");
  t.teardown(() => server.stop());
  await api.report("pf");
  // Let the scans start collecting ended flows (the first scan after start arms them).
  await new Promise((resolve) => setTimeout(resolve, 2500));
  const peer = startClient(net.client.name, net.server.ipv4, 8080, 5, false);
  t.teardown(() => peer.stop());
  const ports = (await peer.linesUntil("done")).map(Number);
  t.equal(ports.length, 5, "five short-lived connections");

  const rows: EndpointReport["connections"] = [];
  const mine = (r: EndpointReport) => r.connections.filter((c) => c.localAddress === net.client.ipv4 && ports.includes(c.localPort));
  await waitFor("all five, closed", () => {
    void api.report("pf").then((r) => rows.push(...mine(r)), () => undefined);
    return rows.length >= 5;
  }, 60_000, 250);
  // A few more scans: nothing comes twice.
  await new Promise((resolve) => setTimeout(resolve, 2500));
  rows.push(...mine(await api.report("pf")));
  t.same(rows.map((c) => c.localPort).sort(), [...ports].sort(), "each exactly once");
  for (const c of rows) {
    t.match(c, { closed: true, remoteAddress: net.server.ipv4, remotePort: 8080, direction: Direction.DIRECTION_OUTGOING, source: Source.SOURCE_PROCFS });
    t.ok(c.pid === 0 || c.pid === peer.pid, "pid 0 unless a scan saw the process");
  }
  const status = await api.status();
  t.equal(status.source, Source.SOURCE_PROCFS);
  t.ok((status.conntrack?.shortLivedReported ?? 0) >= 5, "counted in the status");
});

t.test("/proc source: conntrack's original direction decides where no listening socket does", async (t) => {
  const { net, api } = await setUp(t, ["--source", "procfs", "--proc-poll-interval-ms", "500"]);
  const server = await startServer(net.server.name, net.server.ipv4, 40000, "hold");
  t.teardown(() => server.stop());
  // A client on a low port talking to a high one: the port heuristic would call it incoming.
  const client = spawn("ip", ["netns", "exec", net.client.name, "python3", "-u", "-c", [
    "import socket, sys",
    "s = socket.socket()",
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
    `s.bind(("${net.client.ipv4}", 80))`,
    `s.connect(("${net.server.ipv4}", 40000))`,
    "print('connected', flush=True)",
    "sys.stdin.read()",
  ].join("\n")], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => void client.kill("SIGKILL"));
  await new Promise<void>((resolve) => client.stdout.once("data", () => resolve()));

  let row: EndpointReport["connections"][number] | undefined;
  await waitFor("the client's row", () => {
    void api.report("").then((r) => (row = r.connections.find((c) => c.localAddress === net.client.ipv4 && c.localPort === 80)), () => undefined);
    return row !== undefined;
  }, 60_000, 200);
  t.equal(row!.direction, Direction.DIRECTION_OUTGOING, "outgoing, as conntrack saw it open");
  t.ok(((await api.status()).conntrack?.directionsFromConntrack ?? 0) >= 1, "counted in the status");
});

t.test("without CAP_NET_ADMIN: reports as before, the status says NAT mapping is off and why", async (t) => {
  const { net, plugin, api } = await setUp(t, [], ["setpriv", "--bounding-set=-net_admin", "--"]);
  const status = await api.status();
  t.match(status.conntrack, { enabled: false, reason: /NAT mapping off: no permission to read conntrack.*CAP_NET_ADMIN/ });
  const server = await startServer(net.server.name, net.server.ipv4, 8080, "hold");
  t.teardown(() => server.stop());
  const peer = startClient(net.client.name, net.server.ipv4, 8080, 1, true);
  t.teardown(() => peer.stop());
  const port = Number(await peer.line());
  let rows: EndpointReport["connections"] = [];
  await waitFor("both ends", () => {
    void api.report("").then((r) => (rows = r.connections.filter((c) => c.localPort === port || c.remotePort === port)), () => undefined);
    return rows.length === 2;
  }, 60_000, 200);
  t.match(rows.find((c) => c.localPort === port), { pid: peer.pid, direction: Direction.DIRECTION_OUTGOING, natLocalAddress: "", natRemoteAddress: "" });
  const body = JSON.parse((await httpGet(plugin.scopeSocket, "/report?api_version=1&probe_id=np")).body);
  t.match(body.Plugins[0].description, /NAT mapping off: no permission/, "the Scope plugin description says it");
  t.match(body.EndpointReporterStatus.conntrack, { enabled: false });
});

t.test("with conntrack events switched off: the status says so", async (t) => {
  const { api } = await setUp(t, [], [], (net) => net.inRouter("sysctl", "-qw", "net.netfilter.nf_conntrack_events=0"));
  t.match((await api.status()).conntrack, { enabled: false, reason: /conntrack events are disabled.*nf_conntrack_events/ });
});
