/**
 * The conntrack side in JS: records as the addon writes them (native/src/conntrack_netlink.h),
 * the flow table's lifecycle (dumps, ends, lost events healed by a dump, caps, grace), the NAT
 * mapping with Scope's semantics (toMapping), the translations a connection carries, and the
 * copies with copy_of in the Endpoint topology.
 */
import t from "tap";
import { FlowTable } from "../../plugin/conntrack/flow-table.ts";
import { applyNat } from "../../plugin/conntrack/nat-topology.ts";
import { toMapping } from "../../plugin/conntrack/nat.ts";
import { CT_RECORD_SIZE, CtKind, decodeFlow, type Flow } from "../../plugin/conntrack/record.ts";
import { collectNodes, EdgeDeriver, type NodeAcc, runSteps } from "../../plugin/servers/scope/endpoint-topology.ts";
import { renderScopeReport } from "../../plugin/servers/scope/report-json.ts";
import { setActiveFlows } from "../../plugin/conntrack/active.ts";
import { conn, STATUS } from "../helpers/server-harness.ts";

interface Rec {
  kind: CtKind;
  id?: number;
  state?: number;
  count?: number;
  orig?: [string, number, string, number];
  reply?: [string, number, string, number];
}

function ipv4(text: string): number[] {
  return text.split(".").map(Number);
}

/** Records laid out as struct CtRecord (88 bytes, little-endian). */
function records(list: Rec[]): Uint8Array {
  const out = new Uint8Array(list.length * CT_RECORD_SIZE);
  const view = new DataView(out.buffer);
  list.forEach((r, i) => {
    const at = i * CT_RECORD_SIZE;
    out[at] = r.kind;
    out[at + 2] = r.state ?? 3;
    view.setUint32(at + 8, r.id ?? 0, true);
    view.setUint32(at + 12, r.count ?? 0, true);
    if (r.orig === undefined) return;
    const reply = r.reply ?? [r.orig[2], r.orig[3], r.orig[0], r.orig[1]];
    out[at + 1] = 4;
    const nat = reply[0] !== r.orig[2] || reply[1] !== r.orig[3] || reply[2] !== r.orig[0] || reply[3] !== r.orig[1];
    out[at + 3] = nat ? 1 : 0;
    out.set(ipv4(r.orig[0]), at + 16);
    out.set(ipv4(r.orig[2]), at + 32);
    out.set(ipv4(reply[0]), at + 48);
    out.set(ipv4(reply[2]), at + 64);
    view.setUint16(at + 80, r.orig[1], true);
    view.setUint16(at + 82, r.orig[3], true);
    view.setUint16(at + 84, reply[1], true);
    view.setUint16(at + 86, reply[3], true);
  });
  return out;
}

const CLIENT = "10.1.1.2", VIP = "10.96.0.10", POD = "10.2.2.2", NODE = "10.2.2.1";
const dnatFlow: Rec = { kind: CtKind.new, id: 0xdeadbeef, orig: [CLIENT, 40000, VIP, 80], reply: [POD, 8080, CLIENT, 40000] };
const snatFlow: Rec = { kind: CtKind.new, id: 7, orig: [CLIENT, 40001, POD, 8080], reply: [POD, 8080, NODE, 61000] };

t.test("records decode as the addon lays them out", async (t) => {
  const bytes = records([dnatFlow]);
  const flow = decodeFlow(bytes, new DataView(bytes.buffer), 0)!;
  t.match(flow, { id: 0xdeadbeef, family: 4, origSrc: CLIENT, origSport: 40000, origDst: VIP, origDport: 80, replySrc: POD, replySport: 8080, replyDst: CLIENT, replyDport: 40000, nat: true });
});

t.test("toMapping: Scope's choice of real and rewritten endpoint", async (t) => {
  const decode = (r: Rec) => {
    const b = records([r]);
    return decodeFlow(b, new DataView(b.buffer), 0)!;
  };
  t.same(toMapping(decode(dnatFlow)), { originalAddress: POD, originalPort: 8080, rewrittenAddress: VIP, rewrittenPort: 80 }, "DNAT: the pod, known as the Service address");
  t.same(toMapping(decode(snatFlow)), { originalAddress: CLIENT, originalPort: 40001, rewrittenAddress: NODE, rewrittenPort: 61000 }, "SNAT: the client, known as the node's address");
});

t.test("translations for both sockets of a NATed flow; none for a plain one", async (t) => {
  const flows = new FlowTable();
  flows.apply(records([dnatFlow, snatFlow, { kind: CtKind.new, id: 9, orig: [CLIENT, 40002, POD, 9090] }]));
  t.same(flows.translation(CLIENT, 40000, VIP, 80), { localAddress: "", localPort: 0, remoteAddress: POD, remotePort: 8080 }, "the client learns the pod");
  t.same(flows.translation(POD, 8080, CLIENT, 40000), { localAddress: VIP, localPort: 80, remoteAddress: "", remotePort: 0 }, "the pod learns the Service address");
  t.same(flows.translation(CLIENT, 40001, POD, 8080), { localAddress: NODE, localPort: 61000, remoteAddress: "", remotePort: 0 }, "the client learns its masquerade");
  t.same(flows.translation(POD, 8080, NODE, 61000), { localAddress: "", localPort: 0, remoteAddress: CLIENT, remotePort: 40001 }, "the pod learns the real client");
  t.equal(flows.translation(CLIENT, 40002, POD, 9090), undefined);
  t.equal(flows.counters.flows, 2, "untranslated flows are not kept unless asked");
  t.equal(flows.counters.untranslatedSkipped, 1);
});

t.test("lifecycle: ended flows leave, a dump after lost events sweeps what it did not carry, grace for NAT", async (t) => {
  let now = 1_000;
  const flows = new FlowTable({ natGraceMs: 30_000, now: () => now });
  flows.keepAll = true;
  flows.collectEnded = true;
  const plain = (id: number, port: number): Rec => ({ kind: CtKind.dumped, id, orig: [CLIENT, port, POD, 80] });
  flows.apply(records([{ kind: CtKind.dumpBegin, count: 1 }, plain(1, 1001), plain(2, 1002), plain(3, 1003), { ...dnatFlow, kind: CtKind.dumped }, { kind: CtKind.dumpEnd, count: 4 }]));
  t.equal(flows.counters.flows, 4);
  flows.apply(records([{ kind: CtKind.ended, id: 1, state: 7 }, { kind: CtKind.destroyed, id: 99 }]));
  t.same(flows.takeEnded().map((f) => f.id), [1], "TIME_WAIT ends a flow; a destroy of an unknown one is nothing");
  t.same(flows.takeEnded(), [], "handed out once");
  // Events lost; the next dump has flows 3 and the NAT one only.
  flows.apply(records([{ kind: CtKind.lost, count: 1 }, { kind: CtKind.dumpBegin, count: 2 }, plain(3, 1003), { ...dnatFlow, kind: CtKind.dumped }, { kind: CtKind.dumpEnd, count: 2 }]));
  t.equal(flows.counters.lostEvents, 1);
  t.equal(flows.counters.flows, 2, "flow 2 ended unseen: swept");
  t.same(flows.takeEnded().map((f) => f.id), [2]);
  flows.apply(records([{ kind: CtKind.destroyed, id: 0xdeadbeef }]));
  t.equal(flows.natFlows().length, 1, "an ended NAT flow still maps during its grace");
  t.ok(flows.translation(CLIENT, 40000, VIP, 80));
  now += 30_001;
  t.equal(flows.natFlows().length, 0, "and not after");
  t.equal(flows.translation(CLIENT, 40000, VIP, 80), undefined);
});

t.test("bounded: flows past the cap and ended flows past theirs are counted; a torn record too", async (t) => {
  const flows = new FlowTable({ maxFlows: 2, maxEnded: 1 });
  flows.keepAll = true;
  flows.collectEnded = true;
  flows.apply(records([1, 2, 3].map((id) => ({ kind: CtKind.new, id, orig: [CLIENT, 1000 + id, POD, 80] as [string, number, string, number] }))));
  t.equal(flows.counters.flows, 2);
  t.equal(flows.counters.flowsDropped, 1);
  flows.apply(records([{ kind: CtKind.ended, id: 1, state: 8 }, { kind: CtKind.ended, id: 2, state: 8 }]));
  t.equal(flows.counters.endedDropped, 1);
  flows.apply(new Uint8Array(CT_RECORD_SIZE + 3));
  t.equal(flows.counters.malformedRecords, 2, "a kind 0 record and a torn tail");
});

t.test("Scope's applyNAT: copies with copy_of, merged into existing nodes, sorted adjacency", async (t) => {
  const ctx = { hostId: "host1", localNetworks: [] };
  const flows = new FlowTable();
  flows.apply(records([dnatFlow, snatFlow]));
  // The client (outgoing to the Service address) and the pod (incoming from the client), plus the
  // SNATed pair: the client's connection to the pod, the pod's view of the node address.
  const connections = [
    conn({ localAddress: CLIENT, localPort: 40000, remoteAddress: VIP, remotePort: 80, direction: "outgoing", pid: 11, netns: 5 }),
    conn({ localAddress: POD, localPort: 8080, remoteAddress: CLIENT, remotePort: 40000, direction: "incoming", pid: 22, netns: 6 }),
    conn({ localAddress: CLIENT, localPort: 40001, remoteAddress: POD, remotePort: 8080, direction: "outgoing", pid: 11, netns: 5 }),
    conn({ localAddress: POD, localPort: 8080, remoteAddress: NODE, remotePort: 61000, direction: "incoming", pid: 22, netns: 6 }),
  ];
  const nodes = runSteps(collectNodes(connections, new EdgeDeriver(ctx))) as Map<string, NodeAcc>;
  const copies = applyNat(nodes, flows.natFlows(), ctx);
  t.equal(copies, 2);
  t.match(nodes.get(`;${VIP};80`), { copyOf: `;${POD};8080`, pid: 22 }, "the Service address is a copy of the pod");
  t.match(nodes.get(`;${NODE};61000`), { copyOf: `;${CLIENT};40001`, pid: 11, adjacency: [`;${POD};8080`] }, "the masquerade is a copy of the client, with its adjacency");
  t.same(nodes.get(`;${CLIENT};40000`)!.adjacency, [`;${POD};8080`, `;${VIP};80`]);

  setActiveFlows(flows);
  t.teardown(() => setActiveFlows(undefined));
  const json = JSON.parse(runSteps(renderScopeReport({ id: "p", label: "p", description: "d" }, new EdgeDeriver(ctx), "host1", {
    open: connections, closed: [], droppedClosed: 0, status: STATUS, clients: 0, now: new Date(0),
  })));
  t.match(json.Endpoint.nodes[`;${VIP};80`].latest, { copy_of: { value: `;${POD};8080` }, pid: { value: "22" } }, "rendered as latest.copy_of");
});

t.test("a flow whose real endpoint is not in the topology copies nothing", async (t) => {
  const ctx = { hostId: "host1", localNetworks: [] };
  const flows = new FlowTable();
  flows.apply(records([dnatFlow]));
  const nodes = runSteps(collectNodes([conn({ localAddress: "10.9.9.9", localPort: 5, remoteAddress: "10.9.9.8", remotePort: 6 })], new EdgeDeriver(ctx))) as Map<string, NodeAcc>;
  const before = nodes.size;
  t.equal(applyNat(nodes, flows.natFlows() as Flow[], ctx), 0);
  t.equal(nodes.size, before);
});
