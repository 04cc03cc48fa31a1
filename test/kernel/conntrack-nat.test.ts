/**
 * NAT through a host the way kube-proxy does it (client namespace -> routing "host" namespace ->
 * server namespace; the plugin runs in the host namespace and reads its conntrack): Scope's
 * /report gets the copy node under the Service address with copy_of = the server's node, for
 * long-lived and short-lived connections, IPv4 and IPv6; gRPC rows carry the other side of the
 * NAT; masquerade (SNAT) likewise.
 */
import t from "tap";
import type { ServiceError } from "@grpc/grpc-js";
import type { EndpointReport, TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { createNatNetwork, type NatNetwork } from "../helpers/nat-network.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { type PluginProcess, startPlugin } from "../helpers/plugin-child.ts";
import { httpGet } from "../helpers/server-harness.ts";
import { waitFor } from "../helpers/wait.ts";

interface ScopeNode {
  id: string;
  adjacency?: string[];
  latest?: Record<string, { value: string }>;
}

type Tap = { teardown(fn: () => unknown): void };

async function setUp(t: Tap, args: string[] = []): Promise<{ net: NatNetwork; plugin: PluginProcess }> {
  const net = createNatNetwork();
  t.teardown(() => net.destroy());
  const plugin = await startPlugin({ runtime: "node", readyTimeoutMs: 180_000, wrapper: ["ip", "netns", "exec", net.router.name], args });
  t.teardown(() => plugin.cleanup());
  return { net, plugin };
}

function grpc(plugin: PluginProcess) {
  const client = plugin.client();
  return {
    report: (clientId: string) => new Promise<EndpointReport>((resolve, reject) => client.report({ clientId }, (e: ServiceError | null, r?: EndpointReport) => (e ? reject(e) : resolve(r!)))),
    status: () => new Promise<TrackerStatus>((resolve, reject) => client.getStatus({}, (e: ServiceError | null, r?: TrackerStatus) => (e ? reject(e) : resolve(r!)))),
    close: () => client.close(),
  };
}

async function scopeNodes(plugin: PluginProcess, probe: string): Promise<Record<string, ScopeNode>> {
  const reply = await httpGet(plugin.scopeSocket, `/report?api_version=1&probe_id=${probe}`);
  return JSON.parse(reply.body).Endpoint.nodes;
}

/** Polls the probe's /report until `check` finds what it wants in one body, keeping every body seen. */
async function untilScope(plugin: PluginProcess, probe: string, what: string, check: (nodes: Record<string, ScopeNode>) => boolean): Promise<Record<string, ScopeNode>> {
  let found: Record<string, ScopeNode> | undefined;
  let pending = false;
  await waitFor(what, () => {
    if (!pending) {
      pending = true;
      scopeNodes(plugin, probe).then((nodes) => {
        if (check(nodes)) found = nodes;
      }, () => undefined).finally(() => (pending = false));
    }
    return found !== undefined;
  }, 60_000, 100);
  return found!;
}

const id = (address: string, port: number) => `;${address};${port}`;

for (const family of [4, 6] as const) {
  t.test(`DNAT (IPv${family}): a long-lived connection to a Service address is joined to the server`, async (t) => {
    const { net, plugin } = await setUp(t);
    const api = grpc(plugin);
    t.teardown(() => api.close());
    const vip = net.dnat(family, 80, 8080);
    const serverAddress = family === 4 ? net.server.ipv4 : net.server.ipv6;
    const clientAddress = family === 4 ? net.client.ipv4 : net.client.ipv6;
    const server = await startServer(net.server.name, serverAddress, 8080, "hold");
    t.teardown(() => server.stop());
    const peer = startClient(net.client.name, vip, 80, 1, true);
    t.teardown(() => peer.stop());
    const port = Number(await peer.line());

    const status = await api.status();
    t.match(status.conntrack, { enabled: true }, "conntrack is read in the plugin's namespace");

    const nodes = await untilScope(plugin, "dnat", "the copy node under the Service address", (n) => n[id(vip, 80)]?.latest?.copy_of !== undefined);
    const real = id(serverAddress, 8080);
    t.equal(nodes[id(vip, 80)].latest!.copy_of.value, real, "copy_of names the server's node");
    t.equal(nodes[real].latest?.pid?.value, String(server.pid), "the real node is the server process");
    t.equal(nodes[id(vip, 80)].latest?.pid?.value, String(server.pid), "the copy carries the server's pid, as Scope's WithID copy does");
    t.same(nodes[id(clientAddress, port)].adjacency, [real, id(vip, 80)].sort(), "the client's node points at both, sorted");

    let rows: EndpointReport["connections"] = [];
    await waitFor("both ends with their translations", () => {
      void api.report("").then((r) => (rows = r.connections.filter((c) => c.localPort === port || c.remotePort === port)), () => undefined);
      return rows.length === 2 && rows.every((c) => c.natLocalAddress !== "" || c.natRemoteAddress !== "");
    }, 60_000, 100);
    t.match(rows.find((c) => c.localPort === port), {
      localAddress: clientAddress, remoteAddress: vip, remotePort: 80,
      natRemoteAddress: serverAddress, natRemotePort: 8080, natLocalAddress: "", natLocalPort: 0,
    }, "the connecting side learns where the Service address led");
    t.match(rows.find((c) => c.remotePort === port), {
      localAddress: serverAddress, localPort: 8080, remoteAddress: clientAddress,
      natLocalAddress: vip, natLocalPort: 80, natRemoteAddress: "", natRemotePort: 0,
    }, "the accepting side learns the Service address the client dialled");
  });
}

t.test("DNAT: short-lived connections to a Service address are joined to the server once each", async (t) => {
  const { net, plugin } = await setUp(t);
  const api = grpc(plugin);
  t.teardown(() => api.close());
  const vip = net.dnat(4, 80, 8080);
  const server = await startServer(net.server.name, net.server.ipv4, 8080, "close");
  t.teardown(() => server.stop());
  await api.report("short");
  await scopeNodes(plugin, "short");
  const peer = startClient(net.client.name, vip, 80, 5, false);
  t.teardown(() => peer.stop());
  const ports = (await peer.linesUntil("done")).map(Number);
  t.equal(ports.length, 5);

  const nodes = await untilScope(plugin, "short", "the short-lived connections' copy node", (n) => n[id(vip, 80)]?.latest?.copy_of !== undefined);
  t.equal(nodes[id(vip, 80)].latest!.copy_of.value, id(net.server.ipv4, 8080));
  t.equal(nodes[id(net.server.ipv4, 8080)].latest?.pid?.value, String(server.pid));

  const closed: EndpointReport["connections"] = [];
  await waitFor("every short-lived client connection, closed", () => {
    void api.report("short").then((r) => closed.push(...r.connections.filter((c) => c.closed && ports.includes(c.localPort) && c.remoteAddress === vip)), () => undefined);
    return closed.length >= 5;
  }, 60_000, 200);
  await new Promise((resolve) => setTimeout(resolve, 500));
  closed.push(...(await api.report("short")).connections.filter((c) => c.closed && ports.includes(c.localPort) && c.remoteAddress === vip));
  t.same(closed.map((c) => c.localPort).sort(), [...ports].sort(), "each once");
  t.ok(closed.every((c) => c.natRemoteAddress === net.server.ipv4 && c.natRemotePort === 8080), "closed rows carry the translation too");
});

t.test("SNAT (masquerade): the server's view of a masqueraded client is joined to the client", async (t) => {
  const { net, plugin } = await setUp(t);
  const api = grpc(plugin);
  t.teardown(() => api.close());
  net.masquerade();
  const server = await startServer(net.server.name, net.server.ipv4, 8080, "hold");
  t.teardown(() => server.stop());
  const peer = startClient(net.client.name, net.server.ipv4, 8080, 1, true);
  t.teardown(() => peer.stop());
  const port = Number(await peer.line());

  let rows: EndpointReport["connections"] = [];
  await waitFor("the client's row with its masquerade", () => {
    void api.report("").then((r) => (rows = r.connections.filter((c) => (c.localPort === port && c.localAddress === net.client.ipv4) || c.localAddress === net.server.ipv4)), () => undefined);
    return rows.length === 2 && rows.every((c) => c.natLocalAddress !== "" || c.natRemoteAddress !== "");
  }, 60_000, 100);
  const clientRow = rows.find((c) => c.localAddress === net.client.ipv4)!;
  const serverRow = rows.find((c) => c.localAddress === net.server.ipv4)!;
  t.match(clientRow, { natLocalAddress: net.router.toServer4, natRemoteAddress: "" }, "the client learns its masqueraded address");
  t.match(serverRow, { remoteAddress: net.router.toServer4, natRemoteAddress: net.client.ipv4, natRemotePort: port, natLocalAddress: "" }, "the server learns the real client");

  const masqueraded = id(net.router.toServer4, clientRow.natLocalPort);
  const nodes = await untilScope(plugin, "snat", "the copy of the client under its masqueraded address", (n) => n[masqueraded]?.latest?.copy_of !== undefined);
  t.equal(nodes[masqueraded].latest!.copy_of.value, id(net.client.ipv4, port), "copy_of names the client's node");
  t.equal(nodes[masqueraded].latest?.pid?.value, String(peer.pid), "the copy carries the client's pid");
  t.same(nodes[masqueraded].adjacency, [id(net.server.ipv4, 8080)], "and points at the server");
});
