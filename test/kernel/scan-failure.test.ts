/**
 * A /proc read failure while eBPF is live: the real tracker, the real /proc seen through a proc
 * root of symlinks (every process as it is, except that one test namespace's net/tcp becomes
 * unreadable). The reconcile that reads it must keep that namespace's connections, count the error
 * and the connections it kept, and close them only once the table reads again and they are gone.
 */
import t from "tap";
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../plugin/log.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import { defaultStackConfig, startTrackerStack } from "../../plugin/plugin.ts";
import { createTestNetwork } from "../helpers/netns.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { waitFor } from "../helpers/wait.ts";

/** A proc root mirroring /proc; processes of `netns` get a net/tcp of their own that `breakTable` can spoil. */
function mirrorProc(root: string, netns: number) {
  const ours: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) {
      symlinkSync(`/proc/${name}`, join(root, name)); // sys/kernel/osrelease and the like
      continue;
    }
    let link: string;
    try {
      link = readlinkSync(`/proc/${name}/ns/net`);
    } catch {
      continue;
    }
    if (link !== `net:[${netns}]`) {
      symlinkSync(`/proc/${name}`, join(root, name));
      continue;
    }
    ours.push(Number(name));
    mkdirSync(join(root, name, "net"), { recursive: true });
    for (const entry of ["ns", "fd", "comm"]) symlinkSync(`/proc/${name}/${entry}`, join(root, name, entry));
    for (const table of ["tcp", "tcp6"]) symlinkSync(`/proc/${name}/net/${table}`, join(root, name, "net", table));
  }
  return {
    ours,
    breakTable() {
      for (const pid of ours) {
        rmSync(join(root, String(pid), "net", "tcp"));
        mkdirSync(join(root, String(pid), "net", "tcp")); // open() works, read() fails: EISDIR
      }
    },
    repair() {
      for (const pid of ours) {
        rmSync(join(root, String(pid), "net", "tcp"), { recursive: true });
        symlinkSync(`/proc/${pid}/net/tcp`, join(root, String(pid), "net", "tcp"));
      }
    },
  };
}

t.test("eBPF live, one namespace's net/tcp unreadable: the reconcile keeps its connections and says so", async (t) => {
  const net = createTestNetwork("sf");
  t.teardown(() => net.destroy());
  const server = await startServer(net.a.name, net.a.ipv4, 7201, "hold");
  t.teardown(() => server.stop());
  const client = startClient(net.b.name, net.a.ipv4, 7201, 10, true);
  t.teardown(() => client.stop());
  const ports = (await client.linesUntil("done")).map(Number);
  const serverKeys = ports.map((p) => connectionKey({ netns: net.a.netns, localAddress: net.a.ipv4, localPort: 7201, remoteAddress: net.b.ipv4, remotePort: p }));
  const clientKeys = ports.map((p) => connectionKey({ netns: net.b.netns, localAddress: net.b.ipv4, localPort: p, remoteAddress: net.a.ipv4, remotePort: 7201 }));

  const root = mkdtempSync(join(tmpdir(), "robust-proc-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const mirror = mirrorProc(root, net.a.netns);
  t.ok(mirror.ours.length > 0, `the server's namespace has processes in the mirror (${mirror.ours.join(", ")})`);
  // No socket iterator (its object is not there): /proc is the scan while eBPF is live, as on kernels before 5.8.
  const stack = await startTrackerStack({
    ...defaultStackConfig, source: "ebpf", procRoot: root, reconcileIntervalMs: 3_600_000, snapshotObjectPath: join(root, "no-snapshot.bpf.o"),
  }, createLogger("silent"));
  t.teardown(() => stack.stop());
  await waitFor("both ends seeded", () => [...serverKeys, ...clientKeys].every((k) => stack.table.has(k)));
  t.equal(stack.supervisor.status().source, "ebpf");

  mirror.breakTable();
  const before = stack.supervisor.status().counters;
  await stack.supervisor.reconcileNow();
  const after = stack.supervisor.status().counters;
  t.ok(serverKeys.every((k) => stack.table.has(k)), "the unreadable namespace's connections are all still open");
  t.ok(clientKeys.every((k) => stack.table.has(k)), "and the other ends, read fine");
  t.ok(after.scanErrors > before.scanErrors, `the read error counted (${after.scanErrors - before.scanErrors})`);
  t.ok(after.reconcileKept - before.reconcileKept >= serverKeys.length, `kept connections counted (${after.reconcileKept - before.reconcileKept})`);
  t.equal(stack.supervisor.status().source, "ebpf", "eBPF stays live: a failed /proc read says nothing about it");

  // The server's process dies while its table is unreadable: eBPF sees the closes, and the table reads again.
  // A close the kernel skipped our program for is counted (`skipped`; under TCG it happens) and
  // only a reconcile can heal it, which cannot while the table is unreadable: then the repair does.
  const skippedBefore = stack.supervisor.status().counters.skipped;
  await server.stop();
  await waitFor("the closes, as events (or a skip the kernel counted)", () =>
    serverKeys.every((k) => !stack.table.has(k)) || stack.supervisor.status().counters.skipped > skippedBefore, 5000);
  t.comment(`after the server's death: ${serverKeys.filter((k) => stack.table.has(k)).length} of its ends still in the table, skipped ${stack.supervisor.status().counters.skipped - skippedBefore}`);
  mirror.repair();
  await stack.supervisor.reconcileNow();
  t.ok(serverKeys.every((k) => !stack.table.has(k)), "gone for good once the kernel has them no more");
});
