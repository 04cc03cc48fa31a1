import t from "tap";
import { ReorderBuffer } from "../../plugin/ebpf/reorder-buffer.ts";
import { EventApplier } from "../../plugin/ebpf/event-applier.ts";
import { decodeBatch, EVENT_SIZE } from "../../plugin/ebpf/decode.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { createReportBackend } from "../../plugin/table/report-backend.ts";
import { emptyCounters } from "../../plugin/model/status.ts";
import { encodeRecords, type EventFields } from "../helpers/records.ts";

const MS = 1_000_000;

function ev(type: EventFields["type"], ts: number, port = 5000, cookie = 1): EventFields {
  return { type, timestampNs: ts, localPort: port, sockCookie: cookie };
}

const released = (buffer: ReorderBuffer, now?: number) => decodeBatch(buffer.release(now).bytes).events;

t.test("events leave in timestamp order once older than the window", async (t) => {
  const buffer = new ReorderBuffer(50);
  t.equal(buffer.push(encodeRecords([ev("close", 20 * MS), ev("connect", 10 * MS)])), 2);
  t.equal(buffer.heldBack, 1, "the out-of-order arrival is counted");
  t.same(released(buffer, 55 * MS), [], "nothing is old enough yet");
  t.same(released(buffer, 65 * MS).map((e) => e.type), ["connect"]);
  t.same(released(buffer, 75 * MS).map((e) => e.type), ["close"]);
  t.equal(buffer.pending, 0);
});

t.test("a nearly sorted stream, and a shuffled one, leave sorted; equal timestamps keep arrival order", async (t) => {
  for (const [name, displace] of [["nearly sorted", 8], ["shuffled", 5000]] as const) {
    const buffer = new ReorderBuffer(50);
    const events: EventFields[] = [];
    for (let i = 0; i < 20_000; i++) {
      // Many share a timestamp; the port says the arrival order.
      const ts = (Math.floor(i / 2) + Math.floor(Math.random() * displace)) * 1000;
      events.push(ev("connect", ts, i + 1, i));
    }
    // Arrival in several batches, with releases in between, as the reader hands them over.
    const out: ReturnType<typeof released> = [];
    for (let i = 0; i < events.length; i += 3000) {
      buffer.push(encodeRecords(events.slice(i, i + 3000)));
      out.push(...released(buffer, -Infinity));
    }
    out.push(...released(buffer));
    t.equal(out.length, events.length, `${name}: every record leaves once`);
    const ordered = out.every((e, i) => i === 0 || out[i - 1].timestampNs <= e.timestampNs);
    t.ok(ordered, `${name}: in timestamp order`);
    const expected = events.map((e, i) => [e.timestampNs, i]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(([ts, i]) => `${ts}:${events[i].localPort}`);
    t.same(out.map((e) => `${e.timestampNs}:${e.localPort}`), expected, `${name}: stable for equal timestamps`);
  }
});

t.test("held records survive the buffer growing and moving them", async (t) => {
  const buffer = new ReorderBuffer(0);
  let ts = 0;
  const out: number[] = [];
  const take = (now?: number) => out.push(...decodeBatch(buffer.release(now).bytes).events.map((e) => e.timestampNs));
  // 10,000 at once (more than the initial room), then rounds that leave about half held.
  buffer.push(encodeRecords(Array.from({ length: 10_000 }, () => ev("connect", (ts += 10)))));
  for (let round = 0; round < 40; round++) {
    buffer.push(encodeRecords(Array.from({ length: 1500 }, () => ev("connect", (ts += 10)))));
    take(ts - 750 * 10);
    t.equal(buffer.pending, 750, `round ${round}: half a batch held`);
  }
  take();
  t.equal(out.length, 10_000 + 40 * 1500, "every record left once");
  t.same(out, Array.from({ length: out.length }, (_, i) => (i + 1) * 10), "in order, none altered by the moves");
});

t.test("malformed records are counted and dropped, the rest kept", async (t) => {
  const buffer = new ReorderBuffer(50);
  const batch = encodeRecords([ev("connect", 1), ev("connect", 2, 6001), ev("close", 3)]);
  batch[EVENT_SIZE + 52] = 9; // unknown type
  const partial = new Uint8Array(batch.length + 7);
  partial.set(batch);
  t.equal(buffer.push(partial), 2);
  t.equal(buffer.malformed, 2, "the bad type and the trailing partial record");
  t.same(released(buffer).map((e) => e.type), ["connect", "close"]);
});

t.test("a record older than one already released is counted late and still applied", async (t) => {
  const buffer = new ReorderBuffer(50);
  buffer.push(encodeRecords([ev("connect", 100 * MS)]));
  t.equal(buffer.release(200 * MS).count, 1);
  buffer.push(encodeRecords([ev("close", 90 * MS)]));
  t.equal(buffer.late, 1);
  t.same(released(buffer, 200 * MS).map((e) => e.type), ["close"]);
});

t.test("a connect and its close arriving reversed are applied in the right order", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const backend = createReportBackend(table, () => ({ source: "ebpf", sinceMs: 0, reason: "", counters: emptyCounters() }));
  backend.report("probe");
  const buffer = new ReorderBuffer(50);
  const applier = new EventApplier(table);
  buffer.push(encodeRecords([ev("close", 2 * MS), ev("connect", 1 * MS)]));
  applier.apply(buffer.release(100 * MS));
  t.equal(table.size, 0, "nothing left open");
  t.equal(table.closesOfUnknown, 0);
  const report = backend.report("probe");
  t.same(report.connections.map((c) => [c.direction, c.closed]), [["outgoing", true]]);
});

function applyNow(applier: EventApplier, events: EventFields[]): void {
  const buffer = new ReorderBuffer(0);
  buffer.push(encodeRecords(events));
  applier.apply(buffer.release());
}

t.test("records become connections with every field, IPv4 and IPv6", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  applyNow(new EventApplier(table), [
    { type: "connect", timestampNs: 1, pid: 7, comm: "curl", netns: 4026531840, localAddress: "10.0.0.2", localPort: 51000, remoteAddress: "10.0.0.1", remotePort: 8080, sockCookie: 5 },
    { type: "accept", timestampNs: 2, pid: 8, comm: "nginx", netns: 4026532000, localAddress: "fd00:65::1", localPort: 443, remoteAddress: "fd00:65::2", remotePort: 40000, sockCookie: 6 },
  ]);
  t.same([...table.values()], [
    { localAddress: "10.0.0.2", localPort: 51000, remoteAddress: "10.0.0.1", remotePort: 8080, netns: 4026531840, pid: 7, comm: "curl", direction: "outgoing", closed: false, source: "ebpf" },
    { localAddress: "fd00:65::1", localPort: 443, remoteAddress: "fd00:65::2", remotePort: 40000, netns: 4026532000, pid: 8, comm: "nginx", direction: "incoming", closed: false, source: "ebpf" },
  ]);
});

t.test("reset before accept, in the kernel's order (close, accept, close): opened and closed once, nothing unknown, pairing still on", async (t) => {
  // The order test/kernel/reset-race.test.ts records from the real kernel.
  for (const together of [false, true]) {
    const table = new ConnectionTable({ maxConnections: 10 });
    const applier = new EventApplier(table);
    const changes: string[] = [];
    table.subscribe((c) => changes.push(`${c.type}:${c.connection.direction}`));
    if (together) applyNow(applier, [ev("close", 1 * MS, 6000, 77), ev("accept", 2 * MS, 6000, 77), ev("close", 2 * MS + 1, 6000, 77)]);
    else {
      applyNow(applier, [ev("close", 1 * MS, 6000, 77)]);
      applyNow(applier, [ev("accept", 2 * MS, 6000, 77), ev("close", 2 * MS + 1, 6000, 77)]);
    }
    const how = together ? "in one release" : "across releases";
    t.equal(table.size, 0, `${how}: nothing left open`);
    t.same(changes, ["open:incoming", "close:incoming"], `${how}: one open, one close`);
    t.equal(table.closesOfUnknown, 0, `${how}: the close before the accept is not of an unknown connection`);
    t.equal(applier.pairedLateOpens, 1);
    // Pairing goes on at once (before, an orphan close switched it off for 2 s).
    const passed = applier.passedThrough;
    applyNow(applier, [ev("connect", 3 * MS, 7000, 5), ev("close", 3 * MS + 1, 7000, 5)]);
    t.equal(applier.passedThrough, passed + 1, `${how}: the next short-lived pair still passes through`);
  }
});

t.test("a close no open claims counts as a close of an unknown connection once its window has passed", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const applier = new EventApplier(table, { orphanCloseTtlMs: 2000 });
  applyNow(applier, [ev("close", 1 * MS, 6000, 3)]);
  t.equal(table.closesOfUnknown, 0, "not yet: an accept of that socket may follow");
  applyNow(applier, [ev("connect", 2500 * MS, 7000, 4)]);
  t.equal(table.closesOfUnknown, 1, "counted when the window passed");
  t.equal(table.size, 1);
});

t.test("an orphan close of another socket does not close a new connection on the same tuple", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const applier = new EventApplier(table);
  applyNow(applier, [ev("close", 1 * MS, 6000, 1), ev("accept", 2 * MS, 6000, 2)]);
  t.equal(table.size, 1);
});

t.test("a socket address reused by another connection never closes the wrong one", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const applier = new EventApplier(table);
  // Socket 9 opens port 6000; its close is never seen; the same socket address later opens 6001.
  applyNow(applier, [ev("connect", 1, 6000, 9)]);
  applyNow(applier, [ev("connect", 2, 6001, 9)]);
  // A close carrying socket 9 but the first tuple must close 6000 only.
  applyNow(applier, [ev("close", 3, 6000, 9)]);
  t.same([...table.values()].map((c) => c.localPort), [6001]);
  t.equal(table.closesOfUnknown, 0);
  applyNow(applier, [ev("close", 4, 6001, 9)]);
  t.equal(table.size, 0, "the second connection closes by its tuple");
});

t.test("connections opened and closed within one release reach subscribers in order, without the table", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const backend = createReportBackend(table, () => ({ source: "ebpf", sinceMs: 0, reason: "", counters: emptyCounters() }));
  backend.report("probe");
  const applier = new EventApplier(table);
  const changes: string[] = [];
  table.subscribe((c) => changes.push(`${c.type}:${c.connection.localPort}:${c.connection.closed}`));
  applyNow(applier, [
    ev("connect", 1, 7001, 11),
    ev("connect", 2, 7002, 12), // stays open
    { ...ev("accept", 3, 80, 13), remotePort: 7001 },
    ev("close", 4, 7001, 11),
    { ...ev("close", 5, 80, 13), remotePort: 7001 },
  ]);
  t.same(changes, ["open:7001:false", "open:7002:false", "open:80:false", "close:7001:true", "close:80:true"], "the order applied is the order of the records");
  t.equal(applier.passedThrough, 2);
  t.same([...table.values()].map((c) => c.localPort), [7002], "only the connection still open is in the table");
  t.same(backend.report("probe").connections.map((c) => [c.localPort, c.closed, c.direction, c.pid]), [[7002, false, "outgoing", 42], [7001, true, "outgoing", 42], [80, true, "incoming", 42]]);
});

t.test("a pair whose tuple the table may hold goes through the table", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  // Seeded by /proc with the same tuple (say its close was skipped by the kernel).
  table.open({ localAddress: "10.0.0.1", localPort: 7001, remoteAddress: "10.0.0.2", remotePort: 80, netns: 1, pid: 0, comm: "", direction: "unknown", closed: false, source: "procfs" });
  const applier = new EventApplier(table);
  applyNow(applier, [ev("connect", 1, 7001, 11), ev("close", 2, 7001, 11)]);
  t.equal(applier.passedThrough, 0);
  t.equal(table.size, 0, "the close removed the entry the table held");
});

t.test("a pair whose port an earlier record of the same release took goes through the table", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const applier = new EventApplier(table);
  // Socket 1 opens the tuple and its close is never seen (skipped); socket 2 reuses the tuple and closes.
  applyNow(applier, [ev("connect", 1, 7001, 1), ev("connect", 2, 7001, 2), ev("close", 3, 7001, 2)]);
  t.equal(applier.passedThrough, 0);
  t.equal(table.size, 0, "the close removed the entry the first record made, as without pairing");
});

t.test("while a scan wants close keys, pairs go through the table and report their keys", async (t) => {
  const table = new ConnectionTable({ maxConnections: 10 });
  const keys: string[] = [];
  let wanted = true;
  const applier = new EventApplier(table, { orphanCloseTtlMs: 2000, onCloseKey: (k) => keys.push(k), wantsCloseKeys: () => wanted });
  applyNow(applier, [ev("connect", 1, 7001, 11), ev("close", 2, 7001, 11)]);
  t.same(keys, ["1|10.0.0.1|7001|10.0.0.2|80"]);
  t.equal(applier.passedThrough, 0);
  wanted = false;
  applyNow(applier, [ev("connect", 3, 7002, 12), ev("close", 4, 7002, 12)]);
  t.equal(applier.passedThrough, 1, "and pair again once no scan runs");
  t.equal(table.size, 0);
});
