import { readFileSync, readlinkSync } from "node:fs";
import { type AddressInfo, createServer, connect, type Server, type Socket } from "node:net";
import t from "tap";
import { loadNativeAddon } from "../../plugin/ebpf/native-addon.ts";
import { scanProc } from "../../plugin/procfs/scan.ts";

const canScan = (() => {
  try {
    readlinkSync(`/proc/${process.pid}/ns/net`);
    return true;
  } catch {
    return false;
  }
})();

/** Whether this host can listen on `host` at all (IPv6 may be disabled). */
async function canListen(host: string): Promise<boolean> {
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, host, resolve));
    return true;
  } catch {
    return false;
  } finally {
    server.close();
  }
}
const ipv6Loopback = await canListen("::1");
const ipv6Wildcard = await canListen("::");

async function openPair(host: string): Promise<{ server: Server; client: Socket; accepted: Socket; port: number }> {
  const server = createServer();
  const acceptedP = new Promise<Socket>((resolve) => server.once("connection", resolve));
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  const client = connect(port, host);
  await new Promise<void>((resolve, reject) => client.once("error", reject).once("connect", resolve));
  return { server, client, accepted: await acceptedP, port };
}

function close({ server, client, accepted }: { server: Server; client: Socket; accepted: Socket }) {
  client.destroy();
  accepted.destroy();
  server.close();
}

t.test("finds both ends of a real loopback connection, owned by this process", { skip: canScan ? false : "no readable /proc" }, async (t) => {
  const pair = await openPair("127.0.0.1");
  t.teardown(() => close(pair));
  const scan = await scanProc();
  const netns = Number(/\d+/.exec(readlinkSync(`/proc/${process.pid}/ns/net`))![0]);
  const comm = readFileSync(`/proc/${process.pid}/comm`, "utf8").trim();
  const clientPort = pair.client.localPort!;

  const serverSide = scan.connections.find((c) => c.localPort === pair.port && c.remotePort === clientPort);
  const clientSide = scan.connections.find((c) => c.localPort === clientPort && c.remotePort === pair.port);
  t.match(serverSide, { localAddress: "127.0.0.1", remoteAddress: "127.0.0.1", pid: process.pid, comm, netns, direction: "incoming", source: "procfs", closed: false });
  t.match(clientSide, { localAddress: "127.0.0.1", remoteAddress: "127.0.0.1", pid: process.pid, comm, netns, direction: "unknown" });
  t.ok(scan.listening.get(netns)?.has(pair.port), "the server's port is listed as listening in our namespace");
  t.ok(scan.namespaces >= 1);
});

t.test("IPv6 loopback", { skip: canScan && ipv6Loopback ? false : "no IPv6 loopback or no readable /proc" }, async (t) => {
  const pair = await openPair("::1");
  t.teardown(() => close(pair));
  const scan = await scanProc();
  const serverSide = scan.connections.find((c) => c.localPort === pair.port && c.remotePort === pair.client.localPort);
  t.match(serverSide, { localAddress: "::1", remoteAddress: "::1", pid: process.pid, direction: "incoming" });
});

t.test("a dual-stack server's IPv4 client is reported with plain IPv4 addresses", { skip: canScan && ipv6Wildcard ? false : "no IPv6 or no readable /proc" }, async (t) => {
  const server = createServer();
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "::", resolve));
  const port = (server.address() as AddressInfo).port;
  const client = connect(port, "127.0.0.1");
  await new Promise<void>((resolve) => client.once("connect", resolve));
  const serverSocket = await accepted;
  t.teardown(() => close({ server, client, accepted: serverSocket }));
  const scan = await scanProc();
  const serverSide = scan.connections.find((c) => c.localPort === port && c.remotePort === client.localPort);
  t.match(serverSide, { localAddress: "127.0.0.1", remoteAddress: "127.0.0.1", pid: process.pid, direction: "incoming" });
});

t.test("on the live /proc, the native fd walk attributes a real connection to this process as the JS walk does", { skip: canScan ? false : "no readable /proc" }, async (t) => {
  const pair = await openPair("127.0.0.1");
  t.teardown(() => close(pair));
  const mine = (c: { localPort: number; remotePort: number }) => c.localPort === pair.port || c.remotePort === pair.port;
  const native = await scanProc({ fdWalker: "native" });
  const js = await scanProc({ fdWalker: "js" });
  const ours = (scan: typeof native) => scan.connections.filter(mine).map((c) => `${c.localPort}>${c.remotePort} ${c.pid} ${c.comm}`).sort();
  t.equal(ours(native).length, 2, "both ends");
  t.ok(native.connections.filter(mine).every((c) => c.pid === process.pid), "owned by this process");
  t.same(ours(native), ours(js));
});

t.test("the native fd walk in small chunks (how it yields inside a process with 100k fds) finds what one call finds", async (t) => {
  const pairs = await Promise.all([openPair("127.0.0.1"), openPair("127.0.0.1"), openPair("127.0.0.1")]);
  t.teardown(() => pairs.forEach(close));
  const addon = loadNativeAddon();
  const dir = `/proc/${process.pid}/fd`;
  const whole = addon.socketInodes(dir);
  t.equal(whole.next, undefined, "one call reads to the end");
  t.ok(whole.inodes.length >= 9, `three listeners and six connected sockets at least (${whole.inodes.length})`);
  const chunked: number[] = [];
  let calls = 0;
  for (let from: bigint | undefined = 0n; from !== undefined; calls++) {
    const chunk = addon.socketInodes(dir, from, 2);
    chunked.push(...chunk.inodes);
    from = chunk.next;
  }
  t.same(chunked, [...whole.inodes], "the same inodes in the same order");
  t.ok(calls > whole.inodes.length / 2, `in ${calls} calls of at most 2 entries`);
  t.throws(() => addon.socketInodes(dir, -1n, 2), /from must be a BigInt >= 0n/);
  t.throws(() => addon.socketInodes(dir, 0n, 0), /maxEntries >= 1/);
  t.throws(() => addon.socketInodes("/proc/4194305/fd"), { code: "ENOENT" }, "a pid that does not exist: vanished");
});
