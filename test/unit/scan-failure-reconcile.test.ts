/**
 * A failed /proc read never closes what it did not read: on a fixture tree (real files, the real
 * scanner and supervisor on --source procfs), an unreadable net/tcp keeps every IPv4 connection of
 * its namespace, net/tcp6 is still read, other namespaces are reconciled as usual, and the errors
 * reach status. A scan that fails outright (the proc root gone) changes nothing and is counted.
 * The same under a live eBPF tracker is in test/kernel/scan-failure.test.ts.
 */
import t from "tap";
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../plugin/log.ts";
import type { ConnectionChange } from "../../plugin/model/backend.ts";
import { defaultStackConfig, startTrackerStack } from "../../plugin/plugin.ts";
import { scanProc } from "../../plugin/procfs/scan.ts";
import { statusToWire } from "../../plugin/servers/grpc/convert.ts";

const NS_A = 7;
const NS_B = 8;
const hex4 = (n: number) => n.toString(16).toUpperCase().padStart(4, "0");
const v4row = (i: number, port: number, inode: number) => `${String(i).padStart(4)}: 0100007F:${hex4(port)} 0200007F:0050 01 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 20 4 30 10 -1\n`;
const v6row = (i: number, port: number, inode: number) => `${String(i).padStart(4)}: B80D0120000000000000000001000000:${hex4(port)} B80D0120000000000000000002000000:01BB 01 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 20 4 30 10 -1\n`;
const HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

/** pid 1 in namespace A (5 IPv4, 3 IPv6 connections), pid 2 in namespace B (1 IPv4). */
function buildTree(root: string, v6Ports: number[]) {
  for (const [pid, ns] of [[1, NS_A], [2, NS_B]]) {
    mkdirSync(join(root, String(pid), "ns"), { recursive: true });
    mkdirSync(join(root, String(pid), "net"), { recursive: true });
    mkdirSync(join(root, String(pid), "fd"), { recursive: true });
    symlinkSync(`net:[${ns}]`, join(root, String(pid), "ns", "net"));
    writeFileSync(join(root, String(pid), "comm"), `p${pid}\n`);
  }
  writeTables(root, v6Ports);
  writeFileSync(join(root, "2", "net", "tcp"), HEADER + v4row(0, 50000, 900));
  writeFileSync(join(root, "2", "net", "tcp6"), HEADER);
}

function writeTables(root: string, v6Ports: number[]) {
  writeFileSync(join(root, "1", "net", "tcp"), HEADER + [40001, 40002, 40003, 40004, 40005].map((p, i) => v4row(i, p, 100 + i)).join(""));
  writeFileSync(join(root, "1", "net", "tcp6"), HEADER + v6Ports.map((p, i) => v6row(i, p, 200 + i)).join(""));
}

/** net/tcp of namespace A becomes a directory: open() works, read() fails with EISDIR. */
function breakTcp(root: string) {
  rmSync(join(root, "1", "net", "tcp"));
  mkdirSync(join(root, "1", "net", "tcp"));
}

t.test("scan: a failed net/tcp is one error, its namespace is marked unread, its net/tcp6 is still read", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "robust-scanfail-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  buildTree(root, [50001, 50002, 50003]);
  breakTcp(root);
  const scan = await scanProc({ procRoot: root });
  t.equal(scan.errors, 1);
  t.same([...scan.unreadNamespaces], [NS_A]);
  t.same(scan.connections.filter((c) => c.netns === NS_A).map((c) => c.localPort).sort(), [50001, 50002, 50003], "tcp6 read despite the tcp failure");
  t.same(scan.connections.filter((c) => c.netns === NS_B).map((c) => c.localPort), [50000]);
});

t.test("reconcile on a scan with an unreadable table closes nothing in that namespace, counts and reports it", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "robust-scanfail-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  buildTree(root, [50001, 50002, 50003]);
  const stack = await startTrackerStack({ ...defaultStackConfig, source: "procfs", procRoot: root, procPollIntervalMs: 3_600_000 }, createLogger("silent"));
  t.teardown(() => stack.stop());
  t.equal(stack.table.size, 9, "seeded: 5 + 3 in A, 1 in B");
  const closes: string[] = [];
  const opens: string[] = [];
  stack.backend.subscribe((change: ConnectionChange) => (change.type === "close" ? closes : opens).push(`${change.connection.netns}:${change.connection.localPort}`));

  breakTcp(root);
  // Meanwhile an IPv6 connection opens in A and one closes in A (tcp6 is readable), and B's only one closes.
  writeFileSync(join(root, "1", "net", "tcp6"), HEADER + [50001, 50002, 50004].map((p, i) => v6row(i, p, 200 + i)).join(""));
  writeFileSync(join(root, "2", "net", "tcp"), HEADER);
  await stack.supervisor.reconcileNow();

  // Namespace A is not vouched for as a whole: its IPv6 connection missing from tcp6 (50003) is kept
  // too, since a dual-stack socket's IPv4 peer shows in tcp6 and an IPv4 row cannot be told apart.
  t.same(closes, [`${NS_B}:50000`], "only B (read in full) loses its closed connection; nothing of A is closed");
  t.same(opens, [`${NS_A}:50004`], "the new IPv6 connection of A was read and added");
  t.equal(stack.table.size, 9);
  const status = stack.supervisor.status();
  t.match(status.counters, { scanErrors: 1, reconcileKept: 6, reconcileRemoved: 1, reconcileAdded: 1 });
  const wire = statusToWire(status, { clients: 0, watchers: 0 });
  t.match(wire.counters, { scanErrors: 1, reconcileKept: 6 }, "GetStatus carries them");

  // Readable again: the next scan closes what really went while it was unreadable.
  rmSync(join(root, "1", "net", "tcp"), { recursive: true });
  writeTables(root, [50001, 50002, 50004]);
  writeFileSync(join(root, "1", "net", "tcp"), HEADER + [40001, 40002].map((p, i) => v4row(i, p, 100 + i)).join(""));
  await stack.supervisor.reconcileNow();
  t.same(closes.filter((c) => c.startsWith(`${NS_A}:`)).sort(), [`${NS_A}:40003`, `${NS_A}:40004`, `${NS_A}:40005`, `${NS_A}:50003`], "closed once the table reads again");
});

t.test("a namespace missing from a scan that could not place every process is kept; gone once the scan is whole", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "robust-scanfail-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  buildTree(root, []);
  const stack = await startTrackerStack({ ...defaultStackConfig, source: "procfs", procRoot: root, procPollIntervalMs: 3_600_000 }, createLogger("silent"));
  t.teardown(() => stack.stop());
  t.equal(stack.table.size, 6);
  // pid 2's namespace link is unreadable (a file where the link was: EINVAL), so namespace B is not seen.
  rmSync(join(root, "2", "ns", "net"));
  writeFileSync(join(root, "2", "ns", "net"), "");
  await stack.supervisor.reconcileNow();
  t.equal(stack.table.size, 6, "B's connection kept: its namespace may be unreadable, not gone");
  t.equal(stack.supervisor.status().counters.reconcileKept, 1);
  rmSync(join(root, "2"), { recursive: true });
  await stack.supervisor.reconcileNow();
  t.equal(stack.table.size, 5, "the process is gone, the scan is whole: B's connection closed");
});

t.test("a scan that fails outright (the proc root is gone) changes nothing and is counted", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "robust-scanfail-"));
  t.teardown(() => rmSync(`${root}.moved`, { recursive: true, force: true }));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  buildTree(root, [50001]);
  const stack = await startTrackerStack({ ...defaultStackConfig, source: "procfs", procRoot: root, procPollIntervalMs: 50 }, createLogger("silent"));
  t.teardown(() => stack.stop());
  t.equal(stack.table.size, 7);
  renameSync(root, `${root}.moved`);
  const before = stack.supervisor.status().counters.scanFailures;
  await new Promise((r) => setTimeout(r, 300));
  t.equal(stack.table.size, 7, "nothing closed");
  t.ok(stack.supervisor.status().counters.scanFailures > before, `failed polls counted (${stack.supervisor.status().counters.scanFailures})`);
  renameSync(`${root}.moved`, root);
});
