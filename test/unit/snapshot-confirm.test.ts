/**
 * A reconcile's snapshot compared with the table by digest before anything is built: the kernel
 * holding exactly the table's connections is confirmed without a connection per socket, and
 * anything that differs (a socket more or less, another pid or name, the table changing during
 * the comparison) is built for the buckets of the table (256, by ports) where it differs, and only
 * there; most of the table changing during the walk builds them all. The snapshot is a fake here
 * (records in batches, as the addon hands them); test/kernel/snapshot-supervisor.test.ts runs the
 * real iterator.
 */
import t, { type Test } from "tap";
import { type Connection, connectionKey } from "../../plugin/model/connection.ts";
import { digestBucket } from "../../plugin/model/connection-digest.ts";
import { type SnapshotScan, scanSockets, TableDigestMemo } from "../../plugin/snapshot/snapshot-scan.ts";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { encodeSocketRecords, type SocketFields } from "../helpers/records.ts";

const sockets: SocketFields[] = [
  { localAddress: "10.0.0.1", localPort: 80, state: 10 },
  ...Array.from({ length: 3000 }, (_, i): SocketFields => ({ localAddress: "10.0.0.1", localPort: 80, remoteAddress: "10.0.0.2", remotePort: 20000 + i, pid: 7, comm: "srv" })),
  { localAddress: "fd00::1", localPort: 443, remoteAddress: "fd00::2", remotePort: 41000, pid: 8, comm: "tls" },
];

/** The snapshot in batches of `per` records, each handed over on a later turn of the event loop. */
function fakeSnapshot(records: Uint8Array, per = 1000) {
  return {
    read: async (onBatch: (batch: Uint8Array) => void) => {
      for (let o = 0; o < records.byteLength; o += per * 80) {
        await new Promise((r) => setImmediate(r));
        onBatch(records.subarray(o, o + per * 80));
      }
    },
  };
}

/** What a partial scan must hold: every open socket of the snapshot in its compared buckets, and no other. */
async function onlyCompared(t: Test, scan: SnapshotScan, records: Uint8Array, what: string, mustCompare: Array<{ localPort: number; remotePort: number }>): Promise<void> {
  const compared = scan.compared;
  if (compared === undefined) {
    t.fail(`${what}: compared in part`);
    return;
  }
  const buckets = compared.reduce((n, b) => n + b, 0);
  t.ok(buckets >= 1 && buckets <= mustCompare.length, `${what}: ${buckets} bucket(s) compared one by one`);
  t.ok(mustCompare.every((c) => compared[digestBucket(c.localPort, c.remotePort)] === 1), `${what}: among them the one that differs`);
  const expected = (await scanSockets(fakeSnapshot(records))).connections.filter((c) => compared[digestBucket(c.localPort, c.remotePort)] === 1);
  t.same(scan.connections.map(connectionKey).sort(), expected.map(connectionKey).sort(), `${what}: exactly the snapshot's connections in those buckets`);
  t.ok(scan.connections.length < 3001 / 8, `${what}: a small part of the table built (${scan.connections.length})`);
}

/**
 * A scan during whose walk events close the `pick`ed entries and open them again: the walk may
 * have seen either state, so for those the comparison proves nothing.
 */
function scanWhileReopening(records: Uint8Array, table: ConnectionTable, pick: (entries: Array<[string, Connection]>) => Array<[string, Connection]>): Promise<SnapshotScan> {
  const snapshot = fakeSnapshot(records);
  return scanSockets({
    read: async (onBatch) => {
      await snapshot.read(onBatch);
      for (const [key, known] of pick([...table.entries()])) {
        table.close(key);
        table.open(known);
      }
    },
  }, { confirm: table });
}

async function tableOf(records: Uint8Array): Promise<ConnectionTable> {
  const table = new ConnectionTable({ maxConnections: 100_000 });
  for (const c of (await scanSockets(fakeSnapshot(records))).connections) table.open(c);
  return table;
}

t.test("the kernel holding exactly the table's connections is confirmed, and nothing is built", async (t) => {
  const records = encodeSocketRecords(sockets);
  const table = await tableOf(records);
  t.equal(table.size, 3001);
  const scan = await scanSockets(fakeSnapshot(records), { confirm: table });
  t.equal(scan.confirmed, true);
  t.equal(scan.connections.length, 0, "no connection built");
  t.equal(scan.sockets, 3002, "the census still counts every socket");
  t.ok(scan.listening.get(1)?.has(80), "and the listening ports");
});

t.test("whatever a reconcile would act on is not confirmed, and the connections of the buckets where it differs are built", async (t) => {
  const records = encodeSocketRecords(sockets);
  const at = (table: ConnectionTable, i: number) => [...table.values()][i];
  const cases: Array<[string, (table: ConnectionTable) => Array<{ localPort: number; remotePort: number }>]> = [
    ["a connection the table lacks (a missed open)", (table) => {
      const c = at(table, 5);
      table.close([...table.keys()][5]);
      return [c];
    }],
    ["a connection the kernel lacks (a missed close)", (table) => {
      const ghost = { ...at(table, 5), remotePort: 9 };
      table.open(ghost);
      return [ghost];
    }],
    ["both at once, the count unchanged", (table) => {
      const any = at(table, 5);
      table.close([...table.keys()][5]);
      table.open({ ...any, remotePort: 9 });
      return [any, { ...any, remotePort: 9 }];
    }],
    ["another pid", (table) => {
      const c = at(table, 7);
      table.confirm({ ...c, pid: 99 }, [...table.keys()][7]);
      return [c];
    }],
    ["another process name", (table) => {
      const c = at(table, 7);
      table.confirm({ ...c, comm: "other" }, [...table.keys()][7]);
      return [c];
    }],
  ];
  for (const [what, change] of cases) {
    const table = await tableOf(records);
    const differs = change(table);
    const scan = await scanSockets(fakeSnapshot(records), { confirm: table });
    t.equal(scan.confirmed, false, what);
    await onlyCompared(t, scan, records, what, differs);
    t.ok(scan.connections.filter((c) => c.localPort === 80).every((c) => c.direction === "incoming"), `${what}: with the listener's direction`);
  }
});

t.test("most of the table changing during the walk builds every connection", async (t) => {
  const records = encodeSocketRecords(sockets);
  const table = await tableOf(records);
  // Events in nearly every bucket while the kernel walks.
  const scan = await scanWhileReopening(records, table, (entries) => entries.slice(0, 2000));
  t.equal(scan.confirmed, false);
  t.equal(scan.compared, undefined, "not in part");
  t.equal(scan.connections.length, 3001, "every connection built for the full reconcile");
});

t.test("a table that changed during the scan is not confirmed, even when it ends as it began", async (t) => {
  const records = encodeSocketRecords(sockets);
  const table = await tableOf(records);
  const scan = await scanWhileReopening(records, table, (entries) => [entries[10]]);
  t.equal(scan.confirmed, false);
  await onlyCompared(t, scan, records, "its bucket compared", [{ localPort: 80, remotePort: 20010 }]);
});

t.test("a snapshot larger than the table (a seed) is built, not confirmed", async (t) => {
  const table = new ConnectionTable({ maxConnections: 100_000 });
  table.open({ localAddress: "10.0.0.1", localPort: 80, remoteAddress: "10.0.0.2", remotePort: 20000, netns: 1, pid: 7, comm: "srv", direction: "incoming", closed: false, source: "ebpf" });
  const scan = await scanSockets(fakeSnapshot(encodeSocketRecords(sockets)), { confirm: table });
  t.equal(scan.confirmed, false);
  t.equal(scan.connections.length, 3001);
});

t.test("a listener that comes after its connections still gives them their direction", async (t) => {
  const late = [...sockets.slice(1, 1500), sockets[0], ...sockets.slice(1500)];
  const scan = await scanSockets(fakeSnapshot(encodeSocketRecords(late)));
  t.equal(scan.connections.filter((c) => c.localPort === 80 && c.direction === "incoming").length, 3000);
});

t.test("a walk that fails after some batches rejects the scan", async (t) => {
  const records = encodeSocketRecords(sockets);
  const snapshot = fakeSnapshot(records.subarray(0, 1000 * 80));
  await t.rejects(scanSockets({
    read: async (onBatch) => {
      await snapshot.read(onBatch);
      throw Object.assign(new Error("read iterator: Input/output error"), { code: "ERR_BPF_ITER_READ" });
    },
  }), { code: "ERR_BPF_ITER_READ" });
});

t.test("an idle table is digested once: a second reconcile of it reuses the digest, a change takes a new one", async (t) => {
  const records = encodeSocketRecords(sockets);
  const table = await tableOf(records);
  const memo = new TableDigestMemo();
  t.equal((await scanSockets(fakeSnapshot(records), { confirm: table, memo })).confirmed, true);
  t.equal((await scanSockets(fakeSnapshot(records), { confirm: table, memo })).confirmed, true);
  t.equal(memo.computed, 1, "the unchanged table's digest was taken once");
  table.open({ ...[...table.values()][3], remotePort: 9 });
  const scan = await scanSockets(fakeSnapshot(records), { confirm: table, memo });
  t.equal(scan.confirmed, false, "a changed table is not confirmed by its old digest");
  t.equal(memo.computed, 2);
  t.ok(scan.connections.length > 0 && scan.compared !== undefined);
});

t.test("namespace inodes above 2^31 (the host's are ~4026531840) are read, keyed and compared as the unsigned inode", async (t) => {
  const big = 4_026_532_100;
  const records = encodeSocketRecords(sockets.map((s) => ({ ...s, netns: big })));
  const scan = await scanSockets(fakeSnapshot(records));
  t.equal(scan.namespaces, 1);
  t.ok(scan.listening.get(big)?.has(80), "listening ports under the inode itself");
  t.ok(scan.connections.every((c) => c.netns === big));
  t.equal(scan.connections.filter((c) => c.direction === "incoming").length, 3000);
  const table = new ConnectionTable({ maxConnections: 100_000 });
  for (const c of scan.connections) table.open(c);
  t.equal((await scanSockets(fakeSnapshot(records), { confirm: table })).confirmed, true, "and such a table is confirmed by digest");
});

/** A fake snapshot that counts releases: every batch it gave must come back exactly once. */
function releasingSnapshot(records: Uint8Array, per = 1000, between?: (i: number) => Promise<void>) {
  const given: Uint8Array[] = [];
  const released: Uint8Array[] = [];
  return {
    given,
    released,
    read: async (onBatch: (batch: Uint8Array) => void) => {
      for (let o = 0, i = 0; o < records.byteLength; o += per * 80, i++) {
        await (between?.(i) ?? new Promise((r) => setImmediate(r)));
        const batch = records.slice(o, o + per * 80);
        given.push(batch);
        onBatch(batch);
      }
    },
    release: (batch: Uint8Array) => {
      released.push(batch);
      return true;
    },
  };
}

t.test("every batch is handed back (release) once the scan is done with it, whichever way the scan ends", async (t) => {
  const records = encodeSocketRecords(sockets);
  const same = (t: Test, s: ReturnType<typeof releasingSnapshot>, what: string) => {
    t.equal(s.given.length, 4, `${what}: four batches given`);
    t.equal(s.released.length, s.given.length, `${what}: as many released`);
    t.ok(s.given.every((b) => s.released.filter((r) => r === b).length === 1), `${what}: each exactly once`);
  };
  const decoded = releasingSnapshot(records);
  t.equal((await scanSockets(decoded)).connections.length, 3001);
  same(t, decoded, "built");
  const table = await tableOf(records);
  const confirmed = releasingSnapshot(records);
  t.equal((await scanSockets(confirmed, { confirm: table })).confirmed, true);
  same(t, confirmed, "confirmed");
  table.open({ ...[...table.values()][3], remotePort: 9 });
  const compared = releasingSnapshot(records);
  const scan = await scanSockets(compared, { confirm: table });
  t.equal(scan.confirmed, false);
  t.ok(scan.connections.length > 0, "the kept batches were still decoded before their release");
  same(t, compared, "compared, then built");
  const abort = new AbortController();
  const abandoned = releasingSnapshot(records, 1000, async (i) => {
    await new Promise((r) => setImmediate(r));
    if (i === 2) abort.abort(new Error("stopping"));
  });
  await t.rejects(scanSockets(abandoned, { signal: abort.signal }), { message: "stopping" });
  await new Promise((r) => setTimeout(r, 10));
  t.ok(abandoned.given.length >= 3, "the walk had gone on");
  t.ok(abandoned.given.slice(0, 3).every((b) => abandoned.released.includes(b)), "abandoned: every batch it had been given is released");
});
