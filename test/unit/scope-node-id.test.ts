import t from "tap";
import fc from "fast-check";
import { canonicalIp, endpointNodeId, type Network, parseIp, parseNetwork } from "../../plugin/servers/scope/node-id.ts";
import { buildEndpointNodes, makeFilter } from "../../plugin/servers/scope/endpoint-topology.ts";
import type { Connection } from "../../plugin/model/connection.ts";
import { conn } from "../helpers/server-harness.ts";

const ctx = (localNetworks: Network[] = []) => ({ hostId: "host-1", localNetworks });

t.test("endpoint node ids follow report/id.go makeAddressID", async (t) => {
  const cases: Array<[number, string, string]> = [
    [0, "10.32.0.5", ";10.32.0.5;80"],
    [4026531993, "10.32.0.5", ";10.32.0.5;80"], // the namespace only matters for loopback
    [0, "127.0.0.1", "host-1;127.0.0.1;80"],
    [4026531993, "127.0.0.1", "host-1-4026531993;127.0.0.1;80"],
    [7, "127.5.6.7", "host-1-7;127.5.6.7;80"],
    [0, "::1", "host-1;::1;80"],
    [42, "::1", "host-1-42;::1;80"],
    [42, "0:0:0:0:0:0:0:1", "host-1-42;::1;80"],
    [0, "2001:0DB8:0000:0000:0000:0000:0000:0001", ";2001:db8::1;80"],
    [0, "::ffff:10.0.0.1", ";10.0.0.1;80"], // Go prints IPv4-mapped addresses dotted
    [9, "::ffff:127.0.0.1", "host-1-9;127.0.0.1;80"],
    [0, "fe80::1:0:0:1", ";fe80::1:0:0:1;80"],
    [0, "not-an-ip", ";not-an-ip;80"],
  ];
  for (const [netns, address, want] of cases) t.equal(endpointNodeId(ctx(), netns, address, 80), want, `${address} netns ${netns}`);

  const bridge = [parseNetwork("172.17.0.0/16")!];
  t.equal(endpointNodeId(ctx(bridge), 99, "172.17.0.2", 80), "host-1;172.17.0.2;80", "local networks are host-scoped, without netns");
  t.equal(endpointNodeId(ctx(bridge), 99, "::ffff:172.17.0.2", 80), "host-1;172.17.0.2;80");
  t.equal(endpointNodeId(ctx(bridge), 99, "172.18.0.2", 80), ";172.18.0.2;80");
  t.equal(parseNetwork("10.0.0.0"), undefined);
  t.equal(parseNetwork("10.0.0.0/33"), undefined);
  t.equal(parseNetwork("nonsense/8"), undefined);
});

t.test("IPv6 text is printed in RFC 5952 form, as Go's net.IP.String()", async (t) => {
  const cases: Array<[string, string]> = [
    ["::", "::"],
    ["1::", "1::"],
    ["1:0:0:1:0:0:0:1", "1:0:0:1::1"],
    ["1:0:0:0:1:0:0:1", "1::1:0:0:1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["2001:DB8::A", "2001:db8::a"],
    ["::ffff:1.2.3.4", "1.2.3.4"],
    ["::1.2.3.4", "::102:304"],
    ["64:ff9b::1.2.3.4", "64:ff9b::102:304"],
  ];
  for (const [input, want] of cases) t.equal(canonicalIp(parseIp(input)!), want, input);
  fc.assert(fc.property(fc.ipV6(), (ip) => {
    const once = canonicalIp(parseIp(ip)!);
    return canonicalIp(parseIp(once)!) === once;
  }), { numRuns: 500 });
  fc.assert(fc.property(fc.ipV4(), (ip) => canonicalIp(parseIp(ip)!) === ip));
});

const pids = (fromPid: number, toPid: number, ports: number[]) => new Map(ports.map((p) => [p, { fromPid, toPid }]));
const range = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);

t.test("makeFilter thins as connection_tracker.go does", async (t) => {
  t.same(makeFilter(new Map()), { modulus: 1, count: 0 });
  t.same(makeFilter(pids(1000, 0, range(30000, 5))), { modulus: 1, count: 5 }, "5 is too few to thin");
  t.same(makeFilter(pids(1000, 0, range(30000, 50))), { modulus: 9, count: 5 }, "50 off-box thinned to 5");
  t.same(makeFilter(pids(0, 1000, range(30000, 50))), { modulus: 9, count: 5 }, "50 from off-box thinned to 5");
  const mixed = new Map([...pids(1000, 2000, range(30000, 50)), ...pids(2000, 1000, range(40000, 50))]);
  t.same(makeFilter(mixed).count, 100, "no thinning when pids differ");
  const offAndOn = new Map([...pids(0, 1000, range(30000, 50)), ...pids(2000, 1000, range(40000, 50))]);
  t.same(makeFilter(offAndOn).count, 100, "no thinning with and without pid");
});

t.test("topology: adjacency from the opener, pids where known, thinning with conn_count", async (t) => {
  const timestamp = "2024-01-02T03:04:05.678Z";
  const many = range(30000, 50).map((p) => conn({ localPort: p, pid: 1234 }));
  const nodes = buildEndpointNodes([
    ...many,
    conn({ localAddress: "10.0.0.1", localPort: 443, remoteAddress: "10.9.9.9", remotePort: 50001, direction: "incoming", pid: 55 }),
    conn({ localAddress: "10.0.0.1", localPort: 443, remoteAddress: "10.9.9.8", remotePort: 50002, direction: "incoming", pid: 55 }),
    // Unknown direction: the lower port is taken as the listener (Scope's heuristic).
    conn({ localAddress: "10.0.0.1", localPort: 22, remoteAddress: "10.7.7.7", remotePort: 60000, direction: "unknown", pid: 0 }),
  ], { ...ctx(), timestamp });

  const froms = [...nodes.values()].filter((n) => n.id.startsWith(";10.0.0.1;3"));
  t.equal(froms.length, 5, "50 ephemeral connections to one address:port become 5 representatives");
  const total = froms.reduce((sum, n) => sum + Number(n.latest?.conn_count?.value ?? 1), 0);
  t.equal(total, 50, "conn_count adds up to every connection");
  for (const n of froms) {
    t.same(n.adjacency, [";10.0.0.2;80"]);
    t.equal(Number(n.id.split(";")[2]) % 9, 0, "representatives are multiples of the modulus");
    t.same(n.latest?.pid, { timestamp, value: "1234" });
    t.same(n.latest?.host_node_id, { timestamp, value: "host-1;<host>" });
  }
  t.same(nodes.get(";10.0.0.2;80"), { id: ";10.0.0.2;80", topology: "endpoint" }, "the remote side has no pid");

  t.same(nodes.get(";10.9.9.9;50001")?.adjacency, [";10.0.0.1;443"], "incoming: the remote side opened it");
  t.equal(nodes.get(";10.9.9.9;50001")?.latest, undefined);
  t.same(nodes.get(";10.0.0.1;443")?.latest?.pid?.value, "55");
  t.equal(nodes.get(";10.0.0.1;443")?.adjacency, undefined, "the accepting side has no adjacency");
  t.same(nodes.get(";10.7.7.7;60000")?.adjacency, [";10.0.0.1;22"]);
});

t.test("topology: both ends of a local connection merge into one edge with both pids", async (t) => {
  const netns = 4026532000;
  const nodes = buildEndpointNodes([
    conn({ localAddress: "127.0.0.1", localPort: 45000, remoteAddress: "127.0.0.1", remotePort: 8080, direction: "outgoing", pid: 10, netns }),
    conn({ localAddress: "127.0.0.1", localPort: 8080, remoteAddress: "127.0.0.1", remotePort: 45000, direction: "incoming", pid: 20, netns }),
  ], { ...ctx(), timestamp: "2024-01-01T00:00:00.000Z" });
  t.same([...nodes.keys()].sort(), ["host-1-4026532000;127.0.0.1;45000", "host-1-4026532000;127.0.0.1;8080"]);
  t.same(nodes.get("host-1-4026532000;127.0.0.1;45000")?.adjacency, ["host-1-4026532000;127.0.0.1;8080"]);
  t.equal(nodes.get("host-1-4026532000;127.0.0.1;45000")?.latest?.pid?.value, "10");
  t.equal(nodes.get("host-1-4026532000;127.0.0.1;8080")?.latest?.pid?.value, "20");
});

t.test("property: ids equal keys, adjacency sorted and unique, every connection accounted for", async () => {
  const address = fc.constantFrom("10.0.0.1", "10.0.0.2", "127.0.0.1", "::1", "2001:db8::1", "::ffff:10.0.0.3");
  const connection = fc.record({
    localAddress: address,
    localPort: fc.integer({ min: 1, max: 65535 }),
    remoteAddress: address,
    remotePort: fc.constantFrom(80, 443, 8080, 30000, 40001),
    netns: fc.constantFrom(0, 4026531840),
    pid: fc.constantFrom(0, 100),
    comm: fc.constant(""),
    direction: fc.constantFrom("incoming", "outgoing", "unknown"),
    closed: fc.boolean(),
    source: fc.constant("ebpf"),
  }) as fc.Arbitrary<Connection>;
  fc.assert(fc.property(fc.array(connection, { maxLength: 200 }), (connections) => {
    const nodes = buildEndpointNodes(connections, { ...ctx(), timestamp: "2024-01-01T00:00:00.000Z" });
    let edges = 0;
    let represented = 0;
    for (const [key, node] of nodes) {
      if (node.id !== key) return false;
      const adj = node.adjacency ?? [];
      for (let i = 1; i < adj.length; i++) if (!(adj[i - 1] < adj[i])) return false;
      for (const target of adj) if (!nodes.has(target)) return false;
      edges += adj.length;
      if (adj.length > 0) represented += Number(node.latest?.conn_count?.value ?? 1);
    }
    return connections.length === 0 ? nodes.size === 0 && edges === 0 : edges > 0 && represented > 0;
  }), { numRuns: 300 });
});
