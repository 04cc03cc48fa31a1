/**
 * The reset-before-accept race, provoked for real: a client in one test namespace connects and
 * resets (SO_LINGER 0) before the server in the other has called accept(). First the kernel's own
 * order of events, recorded from the ring buffer; then the tracker on that order: each accept
 * pairs with its own close, and no close is of an unknown connection.
 */
import t from "tap";
import { decodeBatch, type TrackerEvent } from "../../plugin/ebpf/decode.ts";
import { defaultObjectPath, loadNativeAddon } from "../../plugin/ebpf/native-addon.ts";
import { createLogger } from "../../plugin/log.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import { defaultStackConfig, startTrackerStack } from "../../plugin/plugin.ts";
import { createTestNetwork, type TestNetwork } from "../helpers/netns.ts";
import { type Peer, startResettingClient, startServer } from "../helpers/peers.ts";
import { waitFor } from "../helpers/wait.ts";

const COUNT = 20;

/** Connects and resets COUNT connections while the server waits, then lets it accept them all. */
async function provoke(t: { teardown(fn: () => unknown): void }, net: TestNetwork, port: number): Promise<number[]> {
  const server: Peer = await startServer(net.a.name, net.a.ipv4, port, "late");
  t.teardown(() => server.stop());
  const client = startResettingClient(net.b.name, net.a.ipv4, port, COUNT);
  t.teardown(() => client.stop());
  const ports = (await client.linesUntil("done")).map(Number);
  await new Promise((r) => setTimeout(r, 100)); // the RSTs reach the queued children
  server.child.stdin.write("\n");
  const accepted = await server.line();
  if (accepted !== `accepted ${COUNT}`) throw new Error(`server: ${accepted}`);
  return ports;
}

t.test("the kernel's order for a reset before accept(): close (softirq), then accept, then the accept's own close", async (t) => {
  const net = createTestNetwork("rr");
  t.teardown(() => net.destroy());
  const events: TrackerEvent[] = [];
  const addon = loadNativeAddon();
  const native = new addon.Tracker({
    objectPath: defaultObjectPath,
    drainIntervalMs: 5,
    onBatch: (batch) => {
      for (const e of decodeBatch(batch).events) if (e.netns === net.a.netns) events.push(e);
    },
    onError: () => {},
  });
  t.teardown(() => native.stop());
  const ports = await provoke(t, net, 7101);
  await waitFor("every server-side event", () => events.filter((e) => e.type === "accept").length >= COUNT, 5000);
  await new Promise((r) => setTimeout(r, 100));
  const bySocket = new Map<string, TrackerEvent[]>();
  for (const e of [...events].sort((a, b) => a.timestampNs - b.timestampNs)) {
    const k = `${e.remotePort}/${e.sockCookie}`;
    bySocket.set(k, [...(bySocket.get(k) ?? []), e]);
  }
  const orders = [...bySocket.values()].filter((list) => ports.includes(list[0].remotePort)).map((list) => list.map((e) => e.type).join(","));
  t.equal(orders.length, COUNT, "one socket per reset connection");
  t.same([...new Set(orders)], ["close,accept,close"], "each: close before accept, then a close after it");
  const first = [...bySocket.values()].find((list) => ports.includes(list[0].remotePort))!;
  t.equal(first[0].pid, 0, "the first close ran in softirq (no process)");
  t.not(first[1].pid, 0, "the accept carries the accepting process");
});

t.test("the tracker on the real order: each accept opens and closes once, no close of an unknown connection", async (t) => {
  const net = createTestNetwork("rr");
  t.teardown(() => net.destroy());
  const stack = await startTrackerStack({ ...defaultStackConfig, source: "ebpf" }, createLogger("silent"));
  t.teardown(() => stack.stop());
  const inTest = (netns: number) => netns === net.a.netns;
  const changes: string[] = [];
  stack.backend.subscribe((c) => inTest(c.connection.netns) && changes.push(`${c.type}:${c.connection.remotePort}`));
  // The table counts closes of unknown connections host-wide (other tests run too): spy on ours.
  const unknownCloses: string[] = [];
  const close = stack.table.close.bind(stack.table);
  stack.table.close = (key: string) => {
    const closed = close(key);
    if (closed === undefined && key.startsWith(`${net.a.netns}|`)) unknownCloses.push(key);
    return closed;
  };
  const before = stack.table.closesOfUnknown;
  const ports = await provoke(t, net, 7102);
  await waitFor("every accept opened and closed", () => ports.every((p) => changes.includes(`close:${p}`)), 5000);
  await new Promise((r) => setTimeout(r, 2500)); // past the applier's 2 s orphan window
  for (const p of ports) t.same(changes.filter((c) => c.endsWith(`:${p}`)), [`open:${p}`, `close:${p}`], `port ${p}: opened once, closed once`);
  t.same(unknownCloses, [], "no close of an unknown connection in the test namespace");
  t.ok(ports.every((p) => !stack.table.has(connectionKey({ netns: net.a.netns, localAddress: net.a.ipv4, localPort: 7102, remoteAddress: net.b.ipv4, remotePort: p }))), "nothing left open");
  t.comment(`host-wide closesOfUnknown moved by ${stack.table.closesOfUnknown - before} meanwhile (other processes)`);
});
