/**
 * Heap per tracked connection in the connection table, against the irreducible reference measured
 * in the same run: a bare Map from the same keys to a number. Goal: <= 300 bytes per connection.
 * Connections come from decoded kernel records (the eBPF path), so strings are made as in production.
 * Usage: node --expose-gc --import tsx scripts/bench/table-memory.ts [connections=100000]
 */
import { decodeBatch, EVENT_SIZE } from "../../plugin/ebpf/decode.ts";
import { EventApplier } from "../../plugin/ebpf/event-applier.ts";
import { ReorderBuffer } from "../../plugin/ebpf/reorder-buffer.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";

const count = Number(process.argv[2] ?? 100_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with node --expose-gc");

/** Kernel records for `count` connections: 10.x.y.z:ephemeral -> 10.0.0.1:443, v4 and v6 mixed, 200 namespaces. */
function records(): Uint8Array {
  const batch = new Uint8Array(count * EVENT_SIZE);
  const view = new DataView(batch.buffer);
  const comms = ["nginx", "curl", "postgres", "java", "envoy"];
  for (let i = 0; i < count; i++) {
    const o = i * EVENT_SIZE;
    view.setBigUint64(o, BigInt(i + 1), true);
    view.setUint32(o + 8, 1000 + (i % 5000), true);
    view.setUint32(o + 12, 4026531840 + (i % 200), true);
    const v6 = i % 4 === 0;
    if (v6) {
      batch.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i >> 16 & 255, i >> 8 & 255, i & 255], o + 16);
      batch.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], o + 32);
    } else {
      batch.set([10, i >> 16 & 255, i >> 8 & 255, i & 255], o + 16);
      batch.set([10, 0, 0, 1], o + 32);
    }
    view.setUint16(o + 48, 32768 + (i % 28000), true);
    view.setUint16(o + 50, 443, true);
    batch[o + 52] = i % 2 === 0 ? 1 : 2;
    batch[o + 53] = v6 ? 6 : 4;
    const comm = comms[i % comms.length];
    for (let c = 0; c < comm.length; c++) batch[o + 56 + c] = comm.charCodeAt(c);
    view.setBigUint64(o + 72, BigInt(0xffff000000000000n) + BigInt(i), true);
  }
  return batch;
}

function heapAfterGc(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

const batch = records();

/** Heap retained by what `build` returns, with everything else it made collected. */
function retained<T>(build: () => T): { bytes: number; value: T } {
  const before = heapAfterGc();
  const value = build();
  return { bytes: heapAfterGc() - before, value };
}

const reference = retained(() => {
  const map = new Map<string, number>();
  const { events } = decodeBatch(batch);
  for (let i = 0; i < events.length; i++) map.set(connectionKey(events[i]), i);
  return map;
});
if (reference.value.size !== count) throw new Error(`reference has ${reference.value.size} keys`);
reference.value.clear();

const table = retained(() => {
  const t = new ConnectionTable({ maxConnections: count * 2 });
  const held = new ReorderBuffer(0);
  held.push(batch);
  new EventApplier(t).apply(held.release());
  return t;
});
if (table.value.size !== count) throw new Error(`expected ${count} connections, table has ${table.value.size}`);

const perConnection = table.bytes / count;
const perReference = reference.bytes / count;
console.log(`connections            ${count}`);
console.log(`table heap             ${(table.bytes / 1048576).toFixed(1)} MiB, ${perConnection.toFixed(0)} bytes/connection (goal <= 300)`);
console.log(`reference Map<key,int> ${(reference.bytes / 1048576).toFixed(1)} MiB, ${perReference.toFixed(0)} bytes/connection`);
console.log(`ratio table/reference  ${(perConnection / perReference).toFixed(2)}x`);
