/**
 * Which scan seeds and reconciles, and what status says about it. The iterator here is a fake
 * standing in for the kernel's: a read failure and a kernel without iterators cannot be provoked
 * on demand (test/kernel/snapshot.test.ts runs the real one, and the real "cannot be created").
 */
import t from "tap";
import { createLogger } from "../../plugin/log.ts";
import type { Connection } from "../../plugin/model/connection.ts";
import { ScanSource } from "../../plugin/snapshot/scan-source.ts";

const log = createLogger("silent");
const fromProc: Connection[] = [{
  localAddress: "10.0.0.1", localPort: 80, remoteAddress: "10.0.0.2", remotePort: 40000, netns: 1,
  pid: 7, comm: "srv", direction: "incoming", closed: false, source: "procfs",
}];

/** One record of struct tracker_socket: 10.0.0.1:80 <- 10.0.0.2:40000, ESTABLISHED, pid 9. */
function oneRecord(): Uint8Array {
  const b = new Uint8Array(80);
  const v = new DataView(b.buffer);
  v.setUint32(8, 9, true);
  v.setUint32(12, 1, true);
  b.set([10, 0, 0, 1], 16);
  b.set([10, 0, 0, 2], 32);
  v.setUint16(48, 80, true);
  v.setUint16(50, 40000, true);
  b[52] = 4; // TRACKER_RECORD_SOCKET
  b[53] = 4; // IPv4
  b[54] = 1; // ESTABLISHED
  b.set(new TextEncoder().encode("srv"), 56);
  return b;
}

function source(records: () => Promise<Uint8Array>, open?: () => never) {
  return new ScanSource({
    procfs: async () => ({ connections: fromProc }),
    ebpfLive: () => true,
    procRoot: "/proc",
    open: open ?? (() => ({ read: async (onBatch: (batch: Uint8Array) => void) => onBatch(await records()), close() {} })),
    log,
  });
}

t.test("a snapshot's records become the scan; status says the iterator is used", async (t) => {
  const scans = source(async () => oneRecord());
  const outcome = await scans.scan();
  t.same(outcome.connections.map((c) => [c.localAddress, c.localPort, c.remoteAddress, c.remotePort, c.pid, c.comm]), [["10.0.0.1", 80, "10.0.0.2", 40000, 9, "srv"]]);
  t.equal(scans.iteratorScans, 1);
  t.equal(scans.describe(), "seed and reconcile by BPF socket iterator (iter/task_file)");
});

t.test("a failed read falls back to /proc for that scan, counted and said; the next read is tried again", async (t) => {
  let fail = true;
  const scans = source(async () => {
    if (fail) throw Object.assign(new Error("read iterator: Input/output error"), { code: "ERR_BPF_ITER_READ" });
    return oneRecord();
  });
  const first = await scans.scan();
  t.same(first.connections, fromProc, "that scan is /proc's");
  t.equal(scans.iteratorReadFailures, 1);
  t.match(scans.describe(), /its last read failed \(1 so far\) and that scan used \/proc: ERR_BPF_ITER_READ: read iterator/);
  fail = false;
  const second = await scans.scan();
  t.equal(second.connections[0].pid, 9, "the iterator again");
  t.equal(scans.describe(), "seed and reconcile by BPF socket iterator (iter/task_file)");
});

t.test("a kernel without iterators: /proc from then on, never tried again, the reason in status", async (t) => {
  let opens = 0;
  const scans = source(async () => oneRecord(), () => {
    opens++;
    throw Object.assign(new Error("kernel has no iter/task_file"), { code: "ERR_BPF_ITER_UNSUPPORTED" });
  });
  await scans.scan();
  await scans.scan();
  t.equal(opens, 1, "a permanent refusal is not retried");
  t.equal(scans.procfsScans, 2);
  t.equal(scans.describe(), "seed and reconcile by /proc scan: the BPF socket iterator is unavailable: ERR_BPF_ITER_UNSUPPORTED: kernel has no iter/task_file");
});

t.test("records of an unknown type or family are counted as scan errors, never decoded", async (t) => {
  const scans = source(async () => {
    const two = new Uint8Array(160);
    two.set(oneRecord(), 0);
    two.set(oneRecord(), 80);
    two[80 + 53] = 9; // no such family
    return two;
  });
  const outcome = await scans.scan();
  t.equal(outcome.connections.length, 1);
  t.equal(outcome.errors, 1);
});
