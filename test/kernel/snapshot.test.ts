/**
 * The BPF socket iterator against the /proc scan on the same host, in namespaces the test
 * creates: the same connections (tuple, netns, pid, comm, direction), both families, a socket held
 * by two processes (and twice by one), a process holding thousands of fds; and the fallback to
 * /proc, with the reason, when the iterator cannot be had. On kernels the iterator gate refuses
 * (before 6.1) the iterator is never created: the test there is that refusal and the /proc scans.
 */
import t from "tap";
import { spawn } from "node:child_process";
import { readdirSync, readlinkSync } from "node:fs";
import { createLogger } from "../../plugin/log.ts";
import { type Connection, connectionKey } from "../../plugin/model/connection.ts";
import { scanProc, scanProcSync } from "../../plugin/procfs/index.ts";
import { ScanSource } from "../../plugin/snapshot/scan-source.ts";
import { scanSockets } from "../../plugin/snapshot/snapshot-scan.ts";
import { SocketSnapshot } from "../../plugin/snapshot/socket-snapshot.ts";
import { checkSnapshotIterator, runningKernelRelease } from "../../plugin/supervisor/kernel-support.ts";
import { networkFor, peerFor, type Tap } from "../helpers/kernel-stack.ts";
import type { TestNetwork } from "../helpers/netns.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { waitFor } from "../helpers/wait.ts";

const log = createLogger("silent");

const network = (t: Tap): TestNetwork => networkFor(t, "i");

const peer = peerFor;

const row = (c: Connection) => `${connectionKey(c)} pid=${c.pid} comm=${c.comm} ${c.direction}`;

/** The test namespaces' rows of a scan, sorted. */
function rowsIn(net: TestNetwork, connections: readonly Connection[]): string[] {
  return connections.filter((c) => c.netns === net.a.netns || c.netns === net.b.netns).map(row).sort();
}

/** The inodes of the sockets a process holds, from its fd directory. */
function socketInodesOf(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (link.startsWith("socket:[")) inodes.add(link);
    } catch { /* closed meanwhile */ }
  }
  return inodes;
}

/** A listener that never accepts and `count` connections to it, in this (the host's) namespace, held by one process. */
async function unacceptedConnections(t: Tap, count: number, backlog: number) {
  const child = spawn("python3", ["-c", [
    "import socket, sys",
    `s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(${backlog})`,
    `cs = [socket.create_connection(s.getsockname()) for _ in range(${count})]`,
    "print(s.getsockname()[1], flush=True)",
    "sys.stdin.read()",
  ].join("\n")], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => void child.kill("SIGKILL"));
  const port = Number(await new Promise<string>((resolve) => child.stdout.once("data", (d) => resolve(String(d).trim()))));
  return { child, port };
}

const release = runningKernelRelease();
const iteratorGate = checkSnapshotIterator({ release });

if (!iteratorGate.supported) {
t.test(`on ${release} the kernel gate refuses the iterator before loading it: seeds and reconciles read /proc, saying why`, async (t) => {
  const net = network(t);
  await peer(t, startServer(net.a.name, net.a.ipv4, 7121, "hold"));
  await (await peer(t, startClient(net.b.name, net.a.ipv4, 7121, 5, true))).linesUntil("done");
  let refusal: unknown;
  try {
    new SocketSnapshot().close();
  } catch (error) {
    refusal = error;
  }
  t.match(refusal, { code: "ERR_BPF_ITER_UNSUPPORTED", message: iteratorGate.reason }, "SocketSnapshot refuses with the gate's reason");
  const scans = new ScanSource({
    procfs: async () => ({ connections: (await scanProc({ procRoot: "/proc" })).connections }),
    ebpfLive: () => true,
    procRoot: "/proc",
    log,
  });
  t.teardown(() => scans.close());
  for (let i = 0; i < 2; i++) {
    const outcome = await scans.scan();
    t.equal(outcome.connections.filter((c) => c.netns === net.a.netns || c.netns === net.b.netns).length, 10, `scan ${i + 1}: the /proc scan found them`);
  }
  t.equal(scans.procfsScans, 2, "every scan read /proc");
  t.equal(scans.iteratorScans, 0);
  t.equal(scans.describe(), `seed and reconcile by /proc scan: the BPF socket iterator is unavailable: ERR_BPF_ITER_UNSUPPORTED: ${iteratorGate.reason}`);
});
} else {
for (const probeReads of [false, true]) {
t.test(`the iterator's snapshot (${probeReads ? "the 5.8-5.10 path, probe reads" : "direct reads"}) equals the /proc scan: every tuple, netns, pid, comm and direction`, async (t) => {
  const net = network(t);
  const snapshot = new SocketSnapshot(undefined, { probeReads });
  t.teardown(() => snapshot.close());

  // IPv4 and IPv6, 40 each, b -> a.
  const v4 = await peer(t, startServer(net.a.name, net.a.ipv4, 7101, "hold"));
  await (await peer(t, startClient(net.b.name, net.a.ipv4, 7101, 40, true))).linesUntil("done");
  await peer(t, startServer(net.a.name, net.a.ipv6, 7102, "hold"));
  await (await peer(t, startClient(net.b.name, net.a.ipv6, 7102, 40, true))).linesUntil("done");
  // One connection whose accepted socket is held twice by the server and once by a forked child.
  const sharing = await peer(t, startServer(net.a.name, net.a.ipv4, 7103, "share"));
  await (await peer(t, startClient(net.b.name, net.a.ipv4, 7103, 1, true))).linesUntil("done");
  const child = Number((await sharing.line()).split(" ")[1]);
  // A process with thousands of fds: 3,000 connections from one client.
  const many = await peer(t, startClient(net.b.name, net.a.ipv4, 7101, 3000, true));
  await many.linesUntil("done");

  // A half-closed connection: the client shut its side (FIN_WAIT2), the server has not (CLOSE_WAIT).
  const halfClosed = spawn("ip", ["netns", "exec", net.b.name, "python3", "-c", [
    "import socket, sys",
    `c = socket.create_connection(('${net.a.ipv4}', 7101)); c.shutdown(socket.SHUT_WR)`,
    "print('shut', flush=True)",
    "sys.stdin.read()",
  ].join("\n")], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => void halfClosed.kill("SIGKILL"));
  await new Promise((resolve) => halfClosed.stdout.once("data", resolve));

  const shared = [...socketInodesOf(sharing.pid)].filter((inode) => socketInodesOf(child).has(inode));
  t.ok(shared.length >= 1, "the server and its child hold the same socket");

  // A connection still in the accept queue is in /proc's table (pid 0) but held by no process yet.
  await waitFor("the servers to accept every connection", () => rowsIn(net, scanProcSync({ procRoot: "/proc" }).connections).every((r) => !r.includes(" pid=0 ")), 10_000, 100);
  // Nothing changes in the test namespaces now: both scans must agree exactly.
  const viaIterator = await scanSockets(snapshot);
  const viaProc = await scanProc({ procRoot: "/proc" });
  const iter = rowsIn(net, viaIterator.connections);
  const proc = rowsIn(net, viaProc.connections);
  t.equal(iter.length, 2 * (40 + 40 + 1 + 3000 + 1), "both ends of every connection, the half-closed one too");
  t.same(iter, proc, "iterator rows equal /proc rows", {
    onlyIterator: iter.filter((r) => !proc.includes(r)).slice(0, 10),
    onlyProc: proc.filter((r) => !iter.includes(r)).slice(0, 10),
  });

  const inA = viaIterator.connections.filter((c) => c.netns === net.a.netns);
  t.ok(inA.some((c) => c.localAddress === net.a.ipv6 && c.localPort === 7102 && c.direction === "incoming"), "IPv6, incoming by the listening port");
  t.ok(inA.some((c) => c.localAddress === net.a.ipv4 && c.localPort === 7101 && c.pid === v4.pid && c.comm === v4.comm()), "IPv4 with the server's pid and comm");
  const sharedRows = inA.filter((c) => c.localPort === 7103);
  t.equal(sharedRows.length, 1, "a shared socket is one connection");
  t.equal(sharedRows[0]?.pid, Math.min(sharing.pid, child), "held by the lowest pid holding it, as /proc says");
  const fromMany = viaIterator.connections.filter((c) => c.pid === many.pid);
  t.equal(fromMany.length, 3000, "every socket of the process with thousands of fds");
  t.equal(viaIterator.malformed, 0, "no malformed record");
  t.ok(viaIterator.listening.get(net.a.netns)?.has(7101) && viaIterator.listening.get(net.a.netns)?.has(7102), "listening ports per namespace");
});
}

t.test("in the plugin's own namespace, sockets no process holds yet (an accept queue) are there with pid 0, as in /proc", async (t) => {
  const snapshot = new SocketSnapshot();
  t.teardown(() => snapshot.close());
  const { child, port } = await unacceptedConnections(t, 3, 16);
  const ours = (connections: readonly Connection[]) => connections.filter((c) => c.localPort === port || c.remotePort === port).map(row).sort();
  const iter = ours((await scanSockets(snapshot)).connections);
  const proc = ours((await scanProc({ procRoot: "/proc" })).connections);
  t.equal(iter.filter((r) => r.includes(" pid=0 ")).length, 3, "the three queued server ends, held by nobody");
  t.equal(iter.filter((r) => r.includes(` pid=${child.pid} `)).length, 3, "the three client ends, with their process");
  t.same(iter, proc, "iterator rows equal /proc rows");
});

t.test("a listener far behind (1,000 connections it never accepts) leaves the snapshot whole: its queue is followed as far as the iterator's buffer allows", async (t) => {
  const snapshot = new SocketSnapshot();
  t.teardown(() => snapshot.close());
  // A queue deeper than one program run can write (8 pages of records) used to fail every read with E2BIG.
  const { child, port } = await unacceptedConnections(t, 1000, 2048);
  const scan = await scanSockets(snapshot);
  const ours = scan.connections.filter((c) => c.localPort === port || c.remotePort === port);
  t.equal(ours.filter((c) => c.pid === child.pid).length, 1000, "every client end, with its process");
  const queued = ours.filter((c) => c.pid === 0).length;
  t.ok(queued >= 400 && queued < 1000, `the queued server ends as far as the walk goes (${queued})`);
  t.ok(scan.listening.get(ours[0]?.netns ?? 0)?.has(port), "the listener itself");
  t.equal(scan.malformed, 0, "no malformed record");
});

t.test("release frees a batch the addon gave, once, and refuses anything else", async (t) => {
  const snapshot = new SocketSnapshot();
  t.teardown(() => snapshot.close());
  const server = spawn("python3", ["-c", "import socket, sys\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\nprint(s.getsockname()[1], flush=True)\nsys.stdin.read()"], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => void server.kill("SIGKILL"));
  await new Promise((resolve) => server.stdout.once("data", resolve));
  const batches: Uint8Array[] = [];
  await snapshot.read((batch) => batches.push(batch));
  t.ok(batches.length >= 1 && batches[0].byteLength >= 80, "at least one record (the test's listener)");
  const copy = new Uint8Array(batches[0]); // (Buffer#slice would be a view)
  t.equal(snapshot.release(batches[0].subarray(80)), false, "a view into a batch: refused");
  t.equal(snapshot.release(copy), false, "a copy (memory the addon does not own): refused");
  t.equal(copy.byteLength, batches[0].byteLength, "and left as it was");
  t.equal(snapshot.release(batches[0]), true, "the batch itself: freed");
  t.equal(batches[0].byteLength, 0, "its bytes are gone (detached)");
  t.equal(snapshot.release(batches[0]), false, "a second release: refused");
});

t.test("the iterator sees every namespace from the plugin's own", async (t) => {
  const net = network(t);
  const snapshot = new SocketSnapshot();
  t.teardown(() => snapshot.close());
  await peer(t, startServer(net.a.name, net.a.ipv4, 7111, "hold"));
  await (await peer(t, startClient(net.b.name, net.a.ipv4, 7111, 3, true))).linesUntil("done");
  const ours = readlinkSync("/proc/self/ns/net");
  const scan = await scanSockets(snapshot);
  const namespaces = new Set(scan.connections.map((c) => c.netns));
  t.ok(namespaces.has(net.a.netns) && namespaces.has(net.b.netns), `both test namespaces, neither of them ours (${ours})`);
});

t.test("an iterator that cannot be created leaves seeds and reconciles to /proc, saying why", async (t) => {
  const net = network(t);
  await peer(t, startServer(net.a.name, net.a.ipv4, 7121, "hold"));
  await (await peer(t, startClient(net.b.name, net.a.ipv4, 7121, 5, true))).linesUntil("done");
  const scans = new ScanSource({
    procfs: async () => ({ connections: (await scanProc({ procRoot: "/proc" })).connections }),
    ebpfLive: () => true,
    procRoot: "/proc",
    objectPath: "/nonexistent/snapshot.bpf.o",
    log,
  });
  t.teardown(() => scans.close());
  const outcome = await scans.scan();
  t.equal(outcome.connections.filter((c) => c.netns === net.a.netns || c.netns === net.b.netns).length, 10, "the /proc scan found them");
  t.equal(scans.procfsScans, 1);
  t.equal(scans.iteratorScans, 0);
  t.match(scans.describe(), /^seed and reconcile by \/proc scan: the BPF socket iterator is unavailable: ERR_BPF_OBJECT: cannot open BPF object \/nonexistent\/snapshot\.bpf\.o/);
});

}

t.test("while no tracker is attached, /proc is the scan and the iterator is not even opened", async (t) => {
  let opened = 0;
  const scans = new ScanSource({
    procfs: async () => ({ connections: [] }),
    ebpfLive: () => false,
    procRoot: "/proc",
    open: () => {
      opened++;
      return new SocketSnapshot();
    },
    log,
  });
  t.teardown(() => scans.close());
  await scans.scan();
  t.equal(opened, 0);
  t.equal(scans.procfsScans, 1);
});
