import t from "tap";
import { buildEndpointNodes, collectNodes, EdgeDeriver, renderNodesJson, runSteps, sortSteps } from "../../plugin/servers/scope/endpoint-topology.ts";
import type { Connection } from "../../plugin/model/connection.ts";

t.test("sortSteps orders like the default sort, for small and large inputs", async (t) => {
  let seed = 7;
  const random = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  for (const size of [0, 1, 5, 2048, 2049, 5000, 20_000]) {
    const keys = Array.from({ length: size }, () => `;10.${random(256)}.${random(256)}.${random(3)};${random(65536)}` + (random(9) === 0 ? "é✓" : ""));
    t.same(runSteps(sortSteps(keys.slice())), keys.slice().sort(), `size ${size}`);
  }
});

t.test("the nodes JSON, written in pieces, parses to the same nodes", async (t) => {
  const connections: Connection[] = [];
  for (let i = 0; i < 30_000; i++) {
    connections.push({
      localAddress: `10.0.${i >> 8 & 255}.${i & 255}`, localPort: 40000 + (i % 20000), remoteAddress: "10.1.0.1", remotePort: 80 + (i % 3),
      netns: 0, pid: i % 11, comm: "c", direction: i % 2 ? "outgoing" : "unknown", closed: false, source: "procfs",
    });
  }
  const ctx = { hostId: "host-1", localNetworks: [] };
  const timestamp = "2024-01-02T03:04:05.678Z";
  const nodes = runSteps(collectNodes(connections, new EdgeDeriver(ctx)));
  const text = runSteps(renderNodesJson(nodes, timestamp, "host-1"));
  t.ok(text.length > 256 * 1024, "spans several pieces");
  const parsed = JSON.parse(text);
  const expected = Object.fromEntries(buildEndpointNodes(connections, { ...ctx, timestamp }));
  t.same(Object.keys(parsed), Object.keys(expected), "same ids, same (sorted) order");
  t.same(parsed, expected);
});
