/**
 * Scope's applyNAT (probe/endpoint/nat.go) on our Endpoint nodes: for every NATed flow whose real
 * endpoint is a node of the topology, a copy of that node under the rewritten address, with
 * latest.copy_of = the real node's id. Ids as Scope makes them there (MakeEndpointNodeIDB with
 * the host id and no namespace). A copy that lands on an existing node merges with it as Scope's
 * AddNode does: adjacency united (sorted), a known pid or conn_count kept.
 */
import type { NodeAcc } from "../servers/scope/endpoint-topology.ts";
import { endpointNodeId, type NodeIdContext } from "../servers/scope/node-id.ts";
import { toMapping } from "./nat.ts";
import type { Flow } from "./record.ts";

export function applyNat(nodes: Map<string, NodeAcc>, flows: readonly Flow[], ctx: NodeIdContext): number {
  if (flows.length === 0) return 0;
  // Copies come from the nodes as built, never from other copies, whatever the flows' order.
  const copies = new Map<string, NodeAcc>();
  for (const f of flows) {
    const m = toMapping(f);
    const realId = endpointNodeId(ctx, 0, m.originalAddress, m.originalPort);
    const real = nodes.get(realId);
    if (real === undefined || real.copyOf !== undefined) continue;
    const copyId = endpointNodeId(ctx, 0, m.rewrittenAddress, m.rewrittenPort);
    if (copyId === realId) continue;
    const copy = copies.get(copyId) ?? { pid: 0, connCount: 0, adjacency: undefined };
    merge(copy, real);
    copy.copyOf ??= realId;
    copies.set(copyId, copy);
  }
  for (const [id, copy] of copies) {
    const known = nodes.get(id);
    if (known === undefined) {
      nodes.set(id, copy);
      continue;
    }
    merge(known, copy);
    known.copyOf ??= copy.copyOf;
  }
  return copies.size;
}

function merge(into: NodeAcc, from: NodeAcc): void {
  if (into.pid === 0) into.pid = from.pid;
  if (into.connCount === 0) into.connCount = from.connCount;
  if (from.adjacency !== undefined) {
    const all = [...(into.adjacency ?? []), ...from.adjacency];
    into.adjacency = [...new Set(all)].sort();
  }
}
