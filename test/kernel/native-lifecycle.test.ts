// Kernel tests for the native addon (build/Release/scope_tracker.node) and the
// eBPF object (build/tracker.bpf.o). They need root and a BPF-capable kernel and
// FAIL (never skip) when the tracker cannot load.
// Build first: bash scripts/build-bpf.sh && bash scripts/build-native.sh
import t from "tap";
import type { NativeTracker, NativeTrackerOptions } from "../../plugin/ebpf/native-addon.ts";
import { expectedAttachments, expectedBackstopReadsGuard, readKernelFacts } from "../../plugin/supervisor/kernel-support.ts";
import { timeScale } from "../helpers/wait.ts";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const addonPath = path.join(root, "build/Release/scope_tracker.node");
const objectPath = path.join(root, "build/tracker.bpf.o");
// The same programs with every record 8 bytes longer (TRACKER_TEST_RECORD_PAD, scripts/build-bpf.sh).
const paddedObjectPath = path.join(root, "build/test/tracker-record-pad.bpf.o");
const denoPath = path.join(root, "node_modules/deno/deno");
const require = createRequire(import.meta.url);

const kernelFacts = readKernelFacts("/proc", "/sys/kernel/btf/vmlinux");
const expectedStateProgram =
  expectedAttachments(kernelFacts)[0].type === "tp_btf" ? "tp_btf/inet_sock_set_state" : "tracepoint/sock/inet_sock_set_state";

type TrackerCtor = new (options: NativeTrackerOptions) => NativeTracker;

function loadTracker(): TrackerCtor {
  if (!existsSync(addonPath)) throw new Error(`${addonPath} missing: run scripts/build-native.sh`);
  if (!existsSync(objectPath)) throw new Error(`${objectPath} missing: run scripts/build-bpf.sh`);
  return (require(addonPath) as { Tracker: TrackerCtor }).Tracker;
}

// bpf/tracker.h, struct tracker_event (80 bytes).
const RECORD = 80;
const CONNECT = 1;
const ACCEPT = 2;
const CLOSE = 3;
interface Ev {
  type: number;
  family: number;
  pid: number;
  netns: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  comm: string;
  cookie: bigint;
}
/** Read independently of plugin/ebpf/decode.ts, straight from the layout in bpf/tracker.h. */
function decode(batches: Uint8Array[]): Ev[] {
  const out: Ev[] = [];
  for (const batch of batches) {
    const b = Buffer.from(batch.buffer, batch.byteOffset, batch.byteLength);
    for (let o = 0; o + RECORD <= b.length; o += RECORD) {
      const family = b[o + 53];
      const addr = (at: number) =>
        family === 4 ? Array.from(b.subarray(at, at + 4)).join(".") : b.subarray(at, at + 16).toString("hex");
      out.push({
        type: b[o + 52],
        family,
        pid: b.readUInt32LE(o + 8),
        netns: b.readUInt32LE(o + 12),
        saddr: addr(o + 16),
        daddr: addr(o + 32),
        sport: b.readUInt16LE(o + 48),
        dport: b.readUInt16LE(o + 50),
        comm: b.subarray(o + 56, o + 72).toString("latin1").replace(/\0.*$/s, ""),
        cookie: b.readBigUInt64LE(o + 72),
      });
    }
  }
  return out;
}

interface Snapshot {
  progs: number;
  maps: number;
  links: number;
  ourProgs: number;
  threads: number;
  fds: number;
}
function bpftoolList(kind: "prog" | "map" | "link"): Array<{ name?: string }> {
  return JSON.parse(execFileSync("bpftool", [kind, "show", "-j"], { encoding: "utf8" }) || "[]");
}
function snapshot(): Snapshot {
  const progs = bpftoolList("prog");
  return {
    progs: progs.length,
    maps: bpftoolList("map").length,
    links: bpftoolList("link").length,
    ourProgs: progs.filter((p) => p.name?.startsWith("handle_")).length,
    threads: readdirSync("/proc/self/task").length,
    fds: readdirSync("/proc/self/fd").length,
  };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor<T>(probe: () => T, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms * timeScale;
  let v = probe();
  while (!ok(v) && Date.now() < end) {
    await sleep(50);
    v = probe();
  }
  return v;
}

function listen(server: net.Server, host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}
async function closedPort(): Promise<number> {
  const s = net.createServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

t.test("start/stop 20 times leaves no programs, maps, links, threads or fds", async (t) => {
  const Tracker = loadTracker();
  await readFile("/proc/self/stat"); // start libuv's thread pool now, not mid-test
  bpftoolList("prog");
  const before = snapshot();
  const errors: Error[] = [];
  for (let i = 0; i < 20; i++) {
    const tr = new Tracker({
      objectPath,
      wakeup: i % 2 === 1, // both consumer modes
      drainIntervalMs: 10,
      onBatch: () => {},
      onError: (e) => errors.push(e),
    });
    if (i === 0 || i === 1) {
      t.ok(tr.attachedPrograms().includes(expectedStateProgram), `state change program attached (${expectedStateProgram})`);
      const during = snapshot();
      t.ok(during.ourProgs >= 1 && during.progs > before.progs, "programs visible while running");
      t.ok(during.maps > before.maps, "maps visible while running");
      t.equal(during.threads, before.threads + 1, "one consumer thread while running");
    }
    tr.stop();
    tr.stop(); // idempotent
    t.same(tr.attachedPrograms(), [], "nothing attached after stop");
  }
  // Program/map ids are released by the kernel shortly after close (RCU): poll.
  const after = await waitFor(snapshot, (s) => s.progs === before.progs && s.maps === before.maps);
  t.equal(after.progs, before.progs, "bpftool prog show count back to baseline");
  t.equal(after.maps, before.maps, "bpftool map show count back to baseline");
  t.equal(after.links, before.links, "bpftool link show count back to baseline");
  t.equal(after.ourProgs, 0, "no handle_* program left");
  t.equal(after.threads, before.threads, "thread count back to baseline");
  t.equal(after.fds, before.fds, "fd count back to baseline");
  t.same(errors, [], "no onError");
});

// Both programs for the state change: the one this kernel gets by default (tp_btf where the kernel
// takes it, per the gate's table) and the classic tracepoint it falls back to, asked for explicitly.
for (const tracepointsOnly of [false, true]) t.test(`loopback connect${tracepointsOnly ? " (classic tracepoints only)" : ""}: CONNECT, ACCEPT and 2 CLOSE; refused connect counted`, async (t) => {
  const Tracker = loadTracker();
  const batches: Uint8Array[] = [];
  const errors: Error[] = [];
  const tr = new Tracker({
    objectPath,
    tracepointsOnly,
    drainIntervalMs: 10,
    onBatch: (b) => batches.push(b),
    onError: (e) => errors.push(e),
  });
  t.teardown(() => tr.stop());
  const attachments = tr.attachments();
  t.comment(`${readFileSync("/proc/sys/kernel/osrelease", "utf8").trim()}: ${attachments.map((a) => `${a.hook} ${a.type} (${a.reason})`).join("; ")}`);
  const expected = expectedAttachments(kernelFacts).map((e) => (tracepointsOnly && e.type === "tp_btf" ? { ...e, type: "tracepoint" } : e));
  t.same(attachments.map(({ hook, type }) => ({ hook, type })), expected, "what got attached is what the kernel gate's table expects");
  // tp_btf has two programs in one section (the state program and its backstop): compare sections.
  t.same([...new Set(tr.attachedPrograms())], attachments.filter((a) => a.program !== null).map((a) => a.program), "attachedPrograms() lists the same programs");
  const names = bpftoolList("prog").map((p) => p.name ?? "");
  if (!tracepointsOnly && expected[0].type === "tp_btf") t.ok(names.includes("handle_set_state_btf") && names.some((n) => n.startsWith("handle_set_state_btf_")), "the tp_btf state program and its backstop are loaded");
  t.ok(attachments.every((a) => a.reason.length > 0), "every hook says why");
  if (tracepointsOnly) t.match(attachments[0].reason, /tp_btf not tried/);
  if (!tracepointsOnly && expected[0].type === "tp_btf") {
    t.match(attachments[0].reason, expectedBackstopReadsGuard(kernelFacts) ? /a backstop reads the first program's per-CPU guard/ : /backstop off \(its skips are counted as missed\): ./,
      "the state hook says whether its backstop reads the first program's guard, as the gate's table expects");
  }

  const server = net.createServer((s) => {
    s.resume();
    s.on("end", () => s.end());
  });
  const serverPort = await listen(server);
  let clientPort = 0;
  await new Promise<void>((resolve, reject) => {
    const c = net.connect(serverPort, "127.0.0.1", () => {
      clientPort = c.localPort!;
      c.end();
    });
    c.on("error", reject);
    c.resume();
    c.on("close", () => resolve());
  });
  await new Promise((r) => server.close(r));

  const mine = () =>
    decode(batches).filter(
      (e) => (e.sport === clientPort && e.dport === serverPort) || (e.sport === serverPort && e.dport === clientPort),
    );
  const seen = await waitFor(mine, (evs) => evs.filter((e) => e.type === CLOSE).length >= 2);

  const failedBefore = tr.counters().failedConnects;
  const refusedPort = await closedPort();
  await new Promise<void>((resolve) => {
    const c = net.connect(refusedPort, "127.0.0.1");
    c.on("error", () => resolve());
    c.on("connect", () => resolve());
  });
  const counters = await waitFor(
    () => tr.counters(),
    (c) => c.failedConnects > failedBefore,
  );
  t.ok(counters.failedConnects >= failedBefore + 1, "refused connect increments failedConnects");

  tr.stop();
  t.same(errors, [], "no onError");
  t.ok(batches.length > 0 && batches.every((b) => b.length > 0 && b.length % RECORD === 0), "batches hold whole records");

  const netns = statSync("/proc/self/ns/net").ino;
  const comm = readFileSync("/proc/self/comm", "utf8").trim();
  const connects = seen.filter((e) => e.type === CONNECT);
  const accepts = seen.filter((e) => e.type === ACCEPT);
  const closes = seen.filter((e) => e.type === CLOSE);
  t.equal(connects.length, 1, "one CONNECT");
  t.equal(accepts.length, 1, "one ACCEPT");
  t.equal(closes.length, 2, "two CLOSE");
  const [conn] = connects;
  const [acc] = accepts;
  if (conn) {
    t.match(conn, { pid: process.pid, family: 4, saddr: "127.0.0.1", daddr: "127.0.0.1", sport: clientPort, dport: serverPort, netns, comm }, "CONNECT fields");
  }
  if (acc) {
    t.match(acc, { pid: process.pid, family: 4, saddr: "127.0.0.1", daddr: "127.0.0.1", sport: serverPort, dport: clientPort, netns, comm }, "ACCEPT fields");
  }
  if (conn && acc) {
    t.not(conn.cookie, acc.cookie, "client and server sockets differ");
    const clientClose = closes.find((e) => e.cookie === conn.cookie);
    const serverClose = closes.find((e) => e.cookie === acc.cookie);
    t.match(clientClose, { family: 4, sport: clientPort, dport: serverPort, netns, pid: 0 }, "client CLOSE joins CONNECT by cookie");
    t.match(serverClose, { family: 4, sport: serverPort, dport: clientPort, netns, pid: 0 }, "server CLOSE joins ACCEPT by cookie");
  }
  const final = tr.counters(); // values read at stop()
  t.ok(final.failedConnects >= counters.failedConnects, "counters still readable after stop");
  t.equal(final.lost, 0, "nothing lost");
  t.equal(final.badSizeRecords, 0, "every record had the expected size");
});

t.test("records of another size are counted as badSizeRecords and never reach onBatch", async (t) => {
  const Tracker = loadTracker();
  if (!existsSync(paddedObjectPath)) throw new Error(`${paddedObjectPath} missing: run scripts/build-bpf.sh`);
  const batches: Uint8Array[] = [];
  const errors: Error[] = [];
  const tr = new Tracker({
    objectPath: paddedObjectPath,
    drainIntervalMs: 10,
    onBatch: (b) => batches.push(b),
    onError: (e) => errors.push(e),
  });
  t.teardown(() => tr.stop());
  t.equal(tr.counters().badSizeRecords, 0, "nothing counted before any event");

  // A real loopback connection: CONNECT, ACCEPT and two CLOSE records, 88 bytes each.
  const server = net.createServer((s) => {
    s.resume();
    s.on("end", () => s.end());
  });
  const port = await listen(server);
  await new Promise<void>((resolve, reject) => {
    const c = net.connect(port, "127.0.0.1", () => c.end());
    c.on("error", reject);
    c.resume();
    c.on("close", () => resolve());
  });
  await new Promise((r) => server.close(r));

  const counted = await waitFor(
    () => tr.counters().badSizeRecords,
    (n) => n >= 4,
  );
  t.ok(counted >= 4, `the connection's four records counted (badSizeRecords ${counted})`);
  tr.stop();
  const final = tr.counters();
  t.ok(final.badSizeRecords >= counted, "badSizeRecords still readable after stop");
  t.equal(batches.length, 0, "no batch reached onBatch: a foreign record is never decoded");
  t.equal(final.lost, 0, "nothing lost: the records were read and dropped, not missed");
  t.same(errors, [], "no onError: a wrong-size record is a counted degradation, not a failure");
});

t.test("stop() wakes the consumer at once and delivers the last batch", async (t) => {
  const Tracker = loadTracker();
  for (const wakeup of [false, true]) {
    const batches: Uint8Array[] = [];
    const tr = new Tracker({ objectPath, wakeup, drainIntervalMs: 60000, onBatch: (b) => batches.push(b), onError: () => {} });
    const server = net.createServer((s) => s.destroy());
    const port = await listen(server);
    await new Promise<void>((resolve) => {
      const c = net.connect(port, "127.0.0.1");
      c.on("error", () => resolve());
      c.on("close", () => resolve());
      c.resume();
    });
    await new Promise((r) => server.close(r));
    const started = Date.now();
    const before = batches.length;
    tr.stop();
    t.ok(Date.now() - started < 2000 * timeScale, `stop() returned promptly (wakeup=${wakeup})`);
    if (!wakeup) t.equal(before, 0, "nothing delivered before stop with a 60 s timer");
    const evs = decode(batches).filter((e) => e.sport === port || e.dport === port);
    t.ok(evs.some((e) => e.type === ACCEPT), `ACCEPT delivered by stop() (wakeup=${wakeup})`);
  }
});

t.test("construction errors carry a code", async (t) => {
  const Tracker = loadTracker();
  const base = { objectPath, onBatch: () => {}, onError: () => {} };
  t.throws(() => new Tracker({ ...base, objectPath: path.join(root, "build/does-not-exist.bpf.o") }), { code: "ERR_BPF_OBJECT" });
  t.throws(() => new Tracker({ ...base, objectPath: "/etc/hostname" }), { code: "ERR_BPF_OBJECT" });
  t.throws(() => new Tracker({ ...base, ringBufferBytes: 12345 }), { code: "ERR_OUT_OF_RANGE" });
  t.throws(() => new Tracker({ ...base, onBatch: undefined as unknown as () => void }), { code: "ERR_INVALID_ARG_TYPE" });
});

// Separate processes: the event loop must not be held open after stop(), and an
// un-stopped tracker must be torn down cleanly when the environment exits.
const exitScript = (extra: string) => `
const { Tracker } = require(${JSON.stringify(addonPath)});
const tr = new Tracker({ objectPath: ${JSON.stringify(objectPath)}, onBatch() {}, onError(e) { console.error(e); process.exit(3); } ${extra} });
`;
t.test("node exits on its own after stop()", async (t) => {
  loadTracker();
  for (const [name, script] of [
    ["stop", exitScript("") + "tr.stop();"],
    ["stop (wakeup)", exitScript(", wakeup: true") + "tr.stop();"],
    ["process.exit while running", exitScript("") + "setTimeout(() => process.exit(0), 50);"],
  ]) {
    const r = spawnSync(process.execPath, ["-e", script], { timeout: 15000 * timeScale, encoding: "utf8" });
    t.equal(r.status, 0, `${name}: exit status 0 (signal ${r.signal}, stderr ${r.stderr.trim()})`);
  }
});

t.test("works under Deno (createRequire of the .node file)", async (t) => {
  loadTracker();
  t.ok(existsSync(denoPath), `${denoPath} present (npm install)`);
  const dir = mkdtempSync(path.join(tmpdir(), "scope-deno-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, "check.mjs");
  writeFileSync(
    script,
    `import { createRequire } from "node:module";
import net from "node:net";
const { Tracker } = createRequire(import.meta.url)(${JSON.stringify(addonPath)});
const batches = [];
const tr = new Tracker({ objectPath: ${JSON.stringify(objectPath)}, drainIntervalMs: 10, onBatch: (b) => batches.push(b), onError: (e) => { console.error(e); Deno.exit(3); } });
const server = net.createServer((s) => s.end());
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const port = server.address().port;
await new Promise((r) => { const c = net.connect(port, "127.0.0.1"); c.resume(); c.on("end", () => c.end()); c.on("close", r); });
server.close();
tr.stop();
let types = [];
for (const b of batches) for (let o = 0; o < b.length; o += 80) if (b.readUInt16LE(o + 48) === port || b.readUInt16LE(o + 50) === port) types.push(b[o + 52]);
console.log(JSON.stringify({ types: types.sort(), attached: tr.attachedPrograms().length, counters: tr.counters() }));
`,
  );
  const r = spawnSync(
    denoPath,
    ["run", "--quiet", "--no-config", "--allow-ffi", "--allow-read", "--allow-net", "--allow-env", "--allow-sys", script],
    { timeout: 60000 * timeScale, encoding: "utf8", env: { ...process.env, DENO_DIR: path.join(dir, "deno-dir"), NO_COLOR: "1" } },
  );
  t.equal(r.status, 0, `deno exit status 0 (signal ${r.signal}, stderr ${r.stderr?.trim()})`);
  const line = (r.stdout ?? "").trim().split("\n").pop() ?? "";
  let result: { types?: number[]; attached?: number } = {};
  try {
    result = JSON.parse(line);
  } catch {
    t.fail(`deno printed no JSON: ${r.stdout}`);
  }
  t.same(result.types, [CONNECT, ACCEPT, CLOSE, CLOSE], "CONNECT, ACCEPT, CLOSE, CLOSE seen under Deno");
  t.equal(result.attached, 0, "nothing attached after stop under Deno");
});
