import fc from "fast-check";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import type { Connection } from "../../plugin/model/connection.ts";
import { heuristicDirection } from "../../plugin/procfs/direction.ts";
import { readKernelRelease, readVersionSignature } from "../../plugin/procfs/kernel-info.ts";
import { scanProc, scanProcSync } from "../../plugin/procfs/scan.ts";
import { parseTcpTable } from "../../plugin/procfs/tcp-table.ts";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "proc");
const HOST = 4026531840;
const CONTAINER = 4026532000;

function pick(c: Connection) {
  return `${c.netns} ${c.localAddress}:${c.localPort} ${c.remoteAddress}:${c.remotePort} ${c.direction} ${c.pid} ${c.comm}`;
}

t.test("two namespaces: tables once per namespace, owners by fd, direction by listening port", async (t) => {
  const scan = await scanProc({ procRoot: join(fixtures, "two-ns") });
  t.equal(scan.namespaces, 2);
  t.equal(scan.errors, 0, "vanished pids and non-socket fds are not errors");
  t.equal(scan.skippedLines, 0);
  t.same([...scan.listening.entries()].map(([ns, ports]) => [ns, [...ports].sort((a, b) => a - b)]), [
    [HOST, [22, 80, 8080]],
    [CONTAINER, [6379]],
  ]);
  t.same(scan.connections.map(pick), [
    `${HOST} 10.0.0.5:80 10.0.0.9:51234 incoming 100 nginx`,
    `${HOST} 10.0.0.5:40000 10.0.0.7:5432 unknown 101 psql`,
    // Still in nginx's accept queue: no inode, no owner yet.
    `${HOST} 10.0.0.5:80 10.0.0.9:51236 incoming 0 `,
    `${HOST} 10.0.0.5:8080 10.0.0.9:40001 incoming 100 nginx`,
    `${HOST} 2001:db8::1:55000 2001:db8::2:443 unknown 101 psql`,
    `${CONTAINER} 127.0.0.1:6379 127.0.0.1:40123 incoming 200 redis-server`,
    `${CONTAINER} 127.0.0.1:40123 127.0.0.1:6379 unknown 201 app`,
    `${CONTAINER} 10.17.0.2:46002 10.10.10.10:443 unknown 200 redis-server`,
  ]);
  t.ok(scan.connections.every((c) => c.source === "procfs" && c.closed === false));
  t.notOk(scan.connections.some((c) => c.localAddress === "10.9.9.9"), "pid 100's copy of the host tables was not read");
  t.ok(scan.durationMs >= 0);
});

t.test("the sync variant finds the same", async (t) => {
  const root = join(fixtures, "two-ns");
  t.same(scanProcSync({ procRoot: root }).connections, (await scanProc({ procRoot: root })).connections);
  t.same(scanProcSync({ procRoot: `${root}/` }).connections.length, 8, "a trailing slash on the root is fine");
});

t.test("hostile tree: broken lines are counted, broken links are errors, the scan completes", async (t) => {
  const scan = await scanProc({ procRoot: join(fixtures, "hostile") });
  t.equal(scan.namespaces, 1);
  t.equal(scan.skippedLines, 9, "8 bad lines in tcp, 1 in tcp6");
  t.equal(scan.errors, 2, "an unparseable ns link and an fd 'directory' that is a file");
  t.same(scan.connections.map(pick), [
    `${HOST} 127.0.0.1:5000 127.0.0.1:60000 unknown 1 init`,
    `${HOST} 127.0.0.1:5001 127.0.0.1:60001 unknown 0 `,
  ]);
});

t.test("an unreadable table is one error, and not retried through another process of the namespace", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "procfs-table-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  for (const pid of ["1", "2"]) {
    mkdirSync(join(root, pid, "ns"), { recursive: true });
    symlinkSync("net:[7]", join(root, pid, "ns", "net"));
  }
  mkdirSync(join(root, "1", "net", "tcp"), { recursive: true });
  mkdirSync(join(root, "2", "net"));
  writeFileSync(join(root, "2", "net", "tcp"), "   0: 0100007F:0050 0100007F:C822 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0\n");
  const scan = await scanProc({ procRoot: root });
  t.equal(scan.errors, 1, "net/tcp that is a directory (EISDIR on read)");
  t.equal(scan.connections.length, 0);
  t.same([...scan.listening.keys()], [7]);
});

t.test("a proc root that cannot be listed fails the scan", async (t) => {
  await t.rejects(scanProc({ procRoot: join(fixtures, "does-not-exist") }), { code: "ENOENT" });
});

t.test("kernel release and Ubuntu version signature", async (t) => {
  t.equal(await readKernelRelease(join(fixtures, "two-ns")), "5.15.0-91-generic");
  t.equal(await readVersionSignature(join(fixtures, "two-ns")), "Ubuntu 5.15.0-91.101-generic 5.15.131");
  t.equal(await readVersionSignature(join(fixtures, "hostile")), undefined, "absent outside Ubuntu");
  await t.rejects(readKernelRelease(join(fixtures, "does-not-exist")));
});

t.test("heuristic direction: the lower port is the server's", async (t) => {
  t.equal(heuristicDirection(80, 51234), "incoming");
  t.equal(heuristicDirection(51234, 443), "outgoing");
  t.equal(heuristicDirection(6000, 6000), "outgoing", "a tie is outgoing, as in Scope");
});

t.test("the async scan hands the event loop back between slices", async (t) => {
  let ran = false;
  const pending = scanProc({ procRoot: join(fixtures, "two-ns"), sliceMs: 0 });
  setImmediate(() => { ran = true; });
  await pending;
  t.ok(ran);
});

// ---- property: generated trees with hostile content ----

const tableText = fc.array(
  fc.oneof(
    fc.string({ maxLength: 160 }),
    fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString("latin1")),
    fc.tuple(fc.nat(0xffffffff), fc.nat(0xffff), fc.nat(0xffffffff), fc.nat(0xffff), fc.constantFrom(1, 1, 6, 10), fc.nat(50)).map(([la, lp, ra, rp, st, inode]) =>
      `   0: ${la.toString(16).padStart(8, "0")}:${lp.toString(16).padStart(4, "0")} ${ra.toString(16).padStart(8, "0")}:${rp.toString(16).padStart(4, "0")} ${st.toString(16).padStart(2, "0")} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 20 4 30 10 -1`),
  ).map((s) => s.replace(/\n/g, " ")),
  { maxLength: 20 },
).map((lines) => lines.join("\n"));

const link = fc.oneof(
  fc.nat(50).map((n) => `socket:[${n}]`),
  fc.constantFrom("/dev/null", "pipe:[3]", "socket:[", "socket:[]", "socket:[x]", "net:[1]", "anon_inode:[eventpoll]"),
  fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !s.includes("\u0000")),
);

const processSpec = fc.record({
  netns: fc.oneof(fc.constantFrom("net:[1]", "net:[2]"), fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !s.includes("\u0000") && !s.startsWith("net:["))),
  tcp: fc.option(tableText),
  tcp6: fc.option(tableText),
  comm: fc.option(fc.string({ maxLength: 20 })),
  fds: fc.option(fc.array(link, { maxLength: 8 })),
});

t.test("property: generated hostile trees never throw and count every bad table line", async (t) => {
  const base = mkdtempSync(join(tmpdir(), "procfs-fuzz-"));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  let run = 0;
  await fc.assert(fc.asyncProperty(fc.array(processSpec, { minLength: 1, maxLength: 5 }), async (procs) => {
    const root = join(base, String(run++));
    procs.forEach((p, i) => {
      const dir = join(root, String(i + 1));
      mkdirSync(join(dir, "ns"), { recursive: true });
      symlinkSync(p.netns, join(dir, "ns", "net"));
      if (p.comm !== null) writeFileSync(join(dir, "comm"), p.comm);
      if (p.tcp !== null || p.tcp6 !== null) mkdirSync(join(dir, "net"));
      if (p.tcp !== null) writeFileSync(join(dir, "net", "tcp"), p.tcp, "latin1");
      if (p.tcp6 !== null) writeFileSync(join(dir, "net", "tcp6"), p.tcp6, "latin1");
      if (p.fds !== null) {
        mkdirSync(join(dir, "fd"));
        p.fds.forEach((target, fd) => symlinkSync(target, join(dir, "fd", String(fd))));
      }
    });
    // Which tables the scan must read: per valid namespace and family, the first process that has
    // that file; for tcp6, a process with a net directory but no tcp6 ends the search (IPv6 off).
    let expectedSkipped = 0;
    for (const ns of ["net:[1]", "net:[2]"]) {
      for (const family of ["tcp", "tcp6"] as const) {
        for (const p of procs.filter((q) => q.netns === ns)) {
          const text = p[family];
          if (text !== null) {
            expectedSkipped += parseTcpTable(Buffer.from(text, "latin1")).skipped;
            break;
          }
          if (family === "tcp6" && p.tcp !== null) break;
        }
      }
    }
    const scan = await scanProc({ procRoot: root });
    if (scan.skippedLines !== expectedSkipped) throw new Error(`skipped ${scan.skippedLines}, expected ${expectedSkipped}`);
    if (scan.namespaces !== new Set(procs.map((p) => p.netns).filter((n) => n === "net:[1]" || n === "net:[2]")).size) throw new Error("namespace count");
    for (const c of scan.connections) {
      if (c.pid !== 0 && (c.pid < 1 || c.pid > procs.length)) throw new Error(`owner ${c.pid} is not a process of the tree`);
    }
  }), { numRuns: 60 });
  t.pass("no throw; skipped lines accounted");
});

t.test("the native fd walk (the default once the addon is built) and the JS walk find the same, errors included", async (t) => {
  for (const tree of ["two-ns", "hostile"]) {
    const procRoot = join(fixtures, tree);
    const native = scanProcSync({ procRoot });
    const js = scanProcSync({ procRoot, fdWalker: "js" });
    t.equal(native.fdWalker, "native", `${tree}: the addon's walk is the default`);
    t.equal(js.fdWalker, "js");
    t.same(native.connections.map(pick), js.connections.map(pick), `${tree}: same connections and owners`);
    t.equal(native.errors, js.errors, `${tree}: same errors (${js.errors})`);
  }
});
