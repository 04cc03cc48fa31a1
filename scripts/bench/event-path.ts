/**
 * CPU cost of the user-side event path per kernel record: decode -> hold-back window -> table,
 * against a reference measured in the same run: a loop that only reads every field of the same
 * records (the floor any decoder pays). Records are synthetic but byte-exact (bpf/tracker.h), in
 * the proportions of real churn: per connection a connect, an accept and two closes.
 * Usage: node --import tsx scripts/bench/event-path.ts [connections=250000]
 */
import { EVENT_SIZE } from "../../plugin/ebpf/record.ts";
import { EventApplier } from "../../plugin/ebpf/event-applier.ts";
import { ReorderBuffer } from "../../plugin/ebpf/reorder-buffer.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { createReportBackend } from "../../plugin/table/report-backend.ts";
import { emptyCounters } from "../../plugin/model/status.ts";

const connections = Number(process.argv[2] ?? 250_000);
const BATCH = 3276; // records per batch, as the addon caps them

function churnRecords(): Uint8Array[] {
  const total = connections * 4;
  const all = new Uint8Array(total * EVENT_SIZE);
  const view = new DataView(all.buffer);
  let n = 0;
  const put = (type: number, i: number, server: boolean, ts: number) => {
    const o = n++ * EVENT_SIZE;
    view.setUint32(o, ts >>> 0, true);
    view.setUint32(o + 4, Math.floor(ts / 2 ** 32), true);
    view.setUint32(o + 8, type === 3 ? 0 : server ? 1000 : 2000, true);
    view.setUint32(o + 12, 4026531840, true);
    all.set([127, 0, 0, 1], o + 16);
    all.set([127, 0, 0, 1], o + 32);
    const ephemeral = 32768 + (i % 28000);
    view.setUint16(o + 48, server ? 8080 : ephemeral, true);
    view.setUint16(o + 50, server ? ephemeral : 8080, true);
    all[o + 52] = type;
    all[o + 53] = 4;
    if (type !== 3) all.set(server ? [110, 103, 105, 110, 120] : [99, 117, 114, 108], o + 56);
    view.setUint32(o + 72, (i * 2 + (server ? 1 : 0)) * 64, true);
    view.setUint32(o + 76, 0xffff8881, true);
  };
  for (let i = 0; i < connections; i++) {
    const ts = 1e12 + i * 15_000;
    put(1, i, false, ts);
    put(2, i, true, ts + 5000);
    put(3, i, false, ts + 8000);
    put(3, i, true, ts + 9000);
  }
  const batches: Uint8Array[] = [];
  for (let r = 0; r < total; r += BATCH) batches.push(all.subarray(r * EVENT_SIZE, Math.min(total, r + BATCH) * EVENT_SIZE));
  return batches;
}

function floor(batches: Uint8Array[]): number {
  let sink = 0;
  for (const b of batches) {
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (let o = 0; o + EVENT_SIZE <= b.byteLength; o += EVENT_SIZE) {
      sink += v.getUint32(o, true) + v.getUint32(o + 8, true) + v.getUint32(o + 12, true) + v.getUint32(o + 16, true) + v.getUint32(o + 32, true);
      sink += v.getUint16(o + 48, true) + v.getUint16(o + 50, true) + b[o + 52] + b[o + 53] + b[o + 56] + v.getUint32(o + 72, true);
    }
  }
  return sink;
}

function pluginPath(batches: Uint8Array[]): number {
  const table = new ConnectionTable({ maxConnections: 65_536 });
  const backend = createReportBackend(table, () => ({ source: "ebpf", sinceMs: 0, reason: "", counters: emptyCounters() }));
  backend.report("scope:probe"); // one registered client, as with a Scope probe attached
  const reorder = new ReorderBuffer(50);
  const applier = new EventApplier(table);
  for (const b of batches) {
    reorder.push(b);
    applier.apply(reorder.release());
  }
  if (table.size !== 0) throw new Error(`table should be empty, has ${table.size}`);
  return backend.report("scope:probe").connections.length;
}

function time(fn: () => unknown): number {
  const start = process.cpuUsage();
  fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) * 1000; // ns
}

const batches = churnRecords();
const records = connections * 4;
for (let warm = 0; warm < 2; warm++) {
  floor(batches);
  pluginPath(batches);
}
const floorNs = Math.min(time(() => floor(batches)), time(() => floor(batches)));
const pluginNs = Math.min(time(() => pluginPath(batches)), time(() => pluginPath(batches)));
console.log(`records                ${records} (${connections} connections)`);
console.log(`reference (read only)  ${(floorNs / records).toFixed(1)} ns/record`);
console.log(`plugin event path      ${(pluginNs / records).toFixed(1)} ns/record, ${(records / (pluginNs / 1e9) / 1e6).toFixed(2)} M records/s of one core`);
console.log(`ratio plugin/reference ${(pluginNs / floorNs).toFixed(1)}x`);
