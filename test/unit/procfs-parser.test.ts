import fc from "fast-check";
import { SocketAddress } from "node:net";
import t from "tap";
import { formatIPv4, formatIPv6 } from "../../plugin/model/address.ts";
import { AddressDecoder } from "../../plugin/procfs/address-decoder.ts";
import { MAX_LINE_BYTES, OPEN_TCP_STATES, parseTcpTable, type TcpRow, TcpState, TcpTableParser } from "../../plugin/procfs/tcp-table.ts";

const H4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n";
const H6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

// Lines as a little-endian x86_64 kernel prints them (one per state of interest).
const LISTEN4 = "   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21365 1 0000000000000000 100 0 0 10 0                     \n";
const ESTAB4 = "   1: 0100007F:A6D2 0100007F:0CEA 01 00000000:00000000 00:00000000 00000000  1000        0 5129321 1 0000000000000000 20 4 30 10 -1                  \n";
const TIMEWAIT4 = "   2: 0100007F:A6D0 0100007F:0CEA 06 00000000:00000000 03:000016B5 00000000     0        0 0 3 0000000000000000                                    \n";
const ESTAB6 = "   0: B80D0120000000000000000001000000:01BB B80D0120000000000000000002000000:D6D8 01 00000000:00000000 02:0000027D 00000000   101        0 88772 2 0000000000000000 21 4 28 10 -1\n";
const MAPPED6 = "   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000A00A8C0:C350 01 00000000:00000000 00:00000000 00000000    33        0 88773 1 0000000000000000 20 4 30 10 -1\n";
const LOOP6 = "   2: 00000000000000000000000001000000:0016 00000000000000000000000001000000:E2D4 01 00000000:00000000 00:00000000 00000000     0        0 88774 1 0000000000000000 20 4 30 10 -1\n";
const LISTEN6 = "   3: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 88775 1 0000000000000000 100 0 0 10 0\n";
const LINKLOCAL6 = "   4: 000080FE00000000FF7E5A02FEED1DFE:0016 000080FE000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 88776 1 0000000000000000 20 4 30 10 -1\n";

t.test("IPv4 rows: listen, established, time-wait", async (t) => {
  const { rows, skipped } = parseTcpTable(H4 + LISTEN4 + ESTAB4 + TIMEWAIT4);
  t.equal(skipped, 0);
  t.same(rows, [
    { state: TcpState.listen, localAddress: "127.0.0.1", localPort: 3306, remoteAddress: "0.0.0.0", remotePort: 0, inode: 21365 },
    { state: TcpState.established, localAddress: "127.0.0.1", localPort: 42706, remoteAddress: "127.0.0.1", remotePort: 3306, inode: 5129321 },
    { state: TcpState.timeWait, localAddress: "127.0.0.1", localPort: 42704, remoteAddress: "127.0.0.1", remotePort: 3306, inode: 0 },
  ]);
});

t.test("IPv6 rows: global, IPv4-mapped folded to IPv4, loopback, listen, link-local", async (t) => {
  const { rows, skipped } = parseTcpTable(H6 + ESTAB6 + MAPPED6 + LOOP6 + LISTEN6 + LINKLOCAL6);
  t.equal(skipped, 0);
  t.same(rows.map((r) => [r.state, r.localAddress, r.localPort, r.remoteAddress, r.remotePort, r.inode]), [
    [1, "2001:db8::1", 443, "2001:db8::2", 55000, 88772],
    [1, "127.0.0.1", 8080, "192.168.0.10", 50000, 88773],
    [1, "::1", 22, "::1", 58068, 88774],
    [10, "::", 8080, "::", 0, 88775],
    [1, "fe80::25a:7eff:fe1d:edfe", 22, "fe80::1", 54321, 88776],
  ]);
});

t.test("addresses print as Node's net module prints them", async (t) => {
  const decoder = new AddressDecoder(true);
  const le = (bytes: number[]) => bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24);
  const words = (address: string) => {
    const groups = address.split(":").map((g) => parseInt(g, 16));
    const bytes = groups.flatMap((g) => [g >> 8, g & 0xff]);
    return [0, 4, 8, 12].map((i) => le(bytes.slice(i, i + 4)) >>> 0) as [number, number, number, number];
  };
  for (const full of ["2001:db8:0:0:1:0:0:1", "fe80:0:0:0:0:0:0:1", "0:0:0:0:0:0:0:1", "0:0:0:0:0:0:0:0", "1:0:0:0:0:0:0:0", "2001:db8:0:1:1:1:1:1", "0:0:1:0:0:0:0:0"]) {
    const node = new SocketAddress({ address: full, family: "ipv6" }).address;
    t.equal(decoder.ipv6(...words(full)), node, full);
  }
  t.equal(decoder.ipv6(...words("0:0:0:0:0:ffff:a00:5")), "10.0.0.5", "IPv4-mapped folds to plain IPv4");
});

t.test("the same table printed by a big-endian host decodes to the same addresses", async (t) => {
  const be = new AddressDecoder(false);
  t.equal(be.ipv4(0x7f000001), "127.0.0.1");
  t.equal(be.ipv6(0x20010db8, 0, 0, 1), "2001:db8::1");
  t.equal(be.ipv6(0, 0, 0x0000ffff, 0x0a000005), "10.0.0.5");
});

t.test("a state filter hands over only wanted rows but still counts the others", async (t) => {
  const seen: number[] = [];
  const parser = new TcpTableParser({ states: [TcpState.established], onRow: (state) => seen.push(state) });
  parser.push(new TextEncoder().encode(H4 + LISTEN4 + ESTAB4 + TIMEWAIT4));
  parser.end();
  t.same(seen, [TcpState.established]);
  t.equal(parser.rows, 3);
  t.equal(parser.skipped, 0);
});

// Lines of connections held in each state on Linux 6.18 (test/helpers/tcp-states-peer.py).
const HALF_CLOSED4 = [
  "   1: 0200E70A:D692 0100E70A:1C85 04 000021F1:00000000 04:000000A1 00000000     0        0 41031 2 000000000eef6a20 20 0 0 14 -1                     \n",
  "   2: 0200E70A:D6A2 0100E70A:1C85 05 00000000:00000000 00:00000000 00000000     0        0 41033 1 000000009b47fdb1 20 0 0 11 -1                     \n",
  "   3: 0200E70A:D6A4 0100E70A:1C85 08 00000000:00000001 00:00000000 00000000     0        0 41035 1 0000000002ce60ab 20 4 0 10 -1                     \n",
];
const LAST_ACK4 = "   2: 0100E70A:1C85 0200E70A:D6B0 09 00010F69:00000000 04:0000001C 00000000     0        1 41038 2 00000000030fc191 20 0 1 15 -1                     \n";
/** The side that closed first let go of its socket: a time-wait remnant, printed with its substate FIN_WAIT2. */
const REMNANT4 = "   3: 0100E70A:1C85 0200E70A:D6A4 05 00000000:00000000 03:000016F6 00000000     0        0 0 3 00000000ed3df295                                      \n";
const REMNANT6 = "   0: 0000000000000000000000000100007F:1C85 0000000000000000000000000100007F:D6A4 05 00000000:00000000 03:000016F6 00000000     0        0 0 3 00000000ed3df295\n";

t.test("Scope's open states: established and half-closed pass, LAST_ACK and time-wait remnants do not", async (t) => {
  const seen: Array<[number, number]> = [];
  const parser = new TcpTableParser({ states: OPEN_TCP_STATES, onRow: (state, _la, localPort) => seen.push([state, localPort]) });
  parser.push(new TextEncoder().encode(H4 + ESTAB4 + HALF_CLOSED4.join("") + LAST_ACK4 + REMNANT4 + TIMEWAIT4 + LISTEN4));
  parser.end();
  t.same(seen, [[TcpState.established, 42706], [TcpState.finWait1, 0xd692], [TcpState.finWait2, 0xd6a2], [TcpState.closeWait, 0xd6a4]]);
  t.equal(parser.rows, 8, "the others are still rows");
  t.equal(parser.skipped, 0);
});

t.test("a time-wait remnant is reported as TIME_WAIT whatever substate the kernel prints (IPv4 and IPv6)", async (t) => {
  const { rows } = parseTcpTable(H4 + REMNANT4 + H6 + REMNANT6);
  t.same(rows.map((r) => [r.state, r.inode]), [[TcpState.timeWait, 0], [TcpState.timeWait, 0]]);
});

t.test("bad lines are skipped and counted, never thrown", async (t) => {
  const cases: Array<[string, string]> = [
    ["blank", "\n"],
    ["cut after the local address", "   1: 0100007F:A6D2\n"],
    ["cut inside the inode at end of input", ESTAB4.slice(0, ESTAB4.indexOf("5129321") + 3)],
    ["cut right after the inode", `${ESTAB4.slice(0, ESTAB4.indexOf("5129321") + 7)}\n`],
    ["bad hex", ESTAB4.replace("0100007F:A6D2", "0100007X:A6D2")],
    ["mismatched widths", ESTAB4.replace("0100007F:0CEA", "00000000000000000000000001000000:0CEA")],
    ["three-digit state", ESTAB4.replace(" 01 ", " 001 ")],
    ["missing fields", "   1: 0100007F:A6D2 0100007F:0CEA 01 00000000:00000000\n"],
    ["non-numeric inode", ESTAB4.replace("5129321", "51x9321")],
    ["binary", "\u0000\u0001\u00ff\u00fe\n"],
    ["too long", `   1: ${"0".repeat(MAX_LINE_BYTES)}\n`],
  ];
  for (const [name, line] of cases) {
    const { rows, skipped } = parseTcpTable(H4 + line);
    t.equal(rows.length, 0, `${name}: no row`);
    t.equal(skipped, 1, `${name}: counted`);
  }
  t.equal(parseTcpTable(H4 + ESTAB4.trimEnd()).skipped, 0, "a complete last line without its newline still parses");
});

// ---- properties ----

const addressV4 = fc.uint8Array({ minLength: 4, maxLength: 4 });
const addressV6 = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  // Mostly-zero addresses exercise "::" compression and the IPv4-mapped fold.
  fc.tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.constantFrom(0, 1, 0xffff), fc.nat(7)).map(([tail, marker, at]) => {
    const b = new Uint8Array(16);
    b.set(tail, 12);
    b[10] = marker >> 8;
    b[11] = marker & 0xff;
    if (at > 0) b[at] = 1;
    return b;
  }),
);

function hexWords(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 4) {
    const v = (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24)) >>> 0;
    out += v.toString(16).toUpperCase().padStart(8, "0");
  }
  return out;
}

const row = fc.record({
  v6: fc.boolean(),
  local4: addressV4, remote4: addressV4, local6: addressV6, remote6: addressV6,
  localPort: fc.integer({ min: 0, max: 65535 }), remotePort: fc.integer({ min: 0, max: 65535 }),
  state: fc.integer({ min: 1, max: 12 }),
  inode: fc.nat(),
});
type GenRow = typeof row extends fc.Arbitrary<infer R> ? R : never;

function kernelLine(i: number, r: GenRow): string {
  const [l, rm] = r.v6 ? [r.local6, r.remote6] : [r.local4, r.remote4];
  const hex4 = (n: number) => n.toString(16).toUpperCase().padStart(4, "0");
  return `${String(i).padStart(4)}: ${hexWords(l)}:${hex4(r.localPort)} ${hexWords(rm)}:${hex4(r.remotePort)} ${r.state.toString(16).toUpperCase().padStart(2, "0")} 00000000:00000000 00:00000000 00000000  1000        0 ${r.inode} 1 0000000000000000 20 4 30 10 -1\n`;
}

function expected(r: GenRow): TcpRow {
  const fmt = (b: Uint8Array) => (r.v6 ? formatIPv6(b, 0) : formatIPv4(b, 0));
  return {
    state: r.state,
    localAddress: fmt(r.v6 ? r.local6 : r.local4), localPort: r.localPort,
    remoteAddress: fmt(r.v6 ? r.remote6 : r.remote4), remotePort: r.remotePort,
    inode: r.inode,
  };
}

const hostileLine = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString("latin1")),
  fc.string({ minLength: MAX_LINE_BYTES, maxLength: MAX_LINE_BYTES + 50 }),
  row.map((r) => kernelLine(0, r)).chain((line) => fc.nat(line.length - 1).map((cut) => line.slice(0, cut))),
).map((s) => s.replace(/\n/g, " "));

function parseInChunks(content: Uint8Array, cuts: number[]): { rows: TcpRow[]; skipped: number; counted: number } {
  const rows: TcpRow[] = [];
  const parser = new TcpTableParser({
    onRow: (state, localAddress, localPort, remoteAddress, remotePort, inode) => rows.push({ state, localAddress, localPort, remoteAddress, remotePort, inode }),
  });
  let at = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    parser.push(content.subarray(at, Math.max(at, cut)));
    at = Math.max(at, cut);
  }
  parser.push(content.subarray(at));
  parser.end();
  return { rows, skipped: parser.skipped, counted: parser.rows };
}

t.test("property: every kernel-formatted row round-trips, whatever hostile lines surround it", async (t) => {
  const item = fc.oneof(row.map((r) => ({ r })), hostileLine.map((h) => ({ h })));
  fc.assert(fc.property(fc.array(item, { maxLength: 30 }), (items) => {
    let text = H4;
    const want: string[] = [];
    items.forEach((it, i) => {
      if ("r" in it) {
        text += kernelLine(i, it.r);
        want.push(JSON.stringify(expected(it.r)));
      } else text += `${it.h}\n`;
    });
    const { rows, skipped } = parseTcpTable(Buffer.from(text, "latin1"));
    // Real rows come out in order (a hostile line may happen to be a well-formed row too).
    let next = 0;
    for (const r of rows) if (next < want.length && JSON.stringify(r) === want[next]) next++;
    if (next !== want.length) throw new Error(`lost a row: got ${rows.length}, matched ${next} of ${want.length}`);
    if (rows.length + skipped > items.length) throw new Error("more results than lines");
  }), { numRuns: 300 });
  t.pass("rows survive hostile neighbours");
});

t.test("property: arbitrary bytes never throw; every line is a row, a header or skipped", async (t) => {
  const content = fc.oneof(
    fc.uint8Array({ maxLength: 4000 }),
    fc.array(fc.oneof(hostileLine, row.map((r) => kernelLine(1, r)), fc.constant(H4.trimEnd()))).map((lines) => Buffer.from(lines.join("\n"), "latin1")),
  );
  fc.assert(fc.property(content, (bytes) => {
    const { skipped, counted } = parseInChunks(bytes, []);
    const lines = Buffer.from(bytes).toString("latin1").split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    const headers = lines.filter((l) => l.length <= MAX_LINE_BYTES && /^ *sl( |$)/.test(l)).length;
    if (counted + skipped + headers !== lines.length) throw new Error(`rows ${counted} + skipped ${skipped} + headers ${headers} != lines ${lines.length}`);
  }), { numRuns: 500 });
  t.pass("no throw, full accounting");
});

t.test("property: how the input is cut into chunks changes nothing", async (t) => {
  const content = fc.array(fc.oneof(hostileLine, row.map((r) => kernelLine(3, r))), { maxLength: 40 })
    .map((lines) => Buffer.from(H6 + lines.join("\n"), "latin1"));
  fc.assert(fc.property(content.chain((b) => fc.tuple(fc.constant(b), fc.array(fc.nat(b.length), { maxLength: 30 }))), ([bytes, cuts]) => {
    const whole = parseInChunks(bytes, []);
    const chunked = parseInChunks(bytes, cuts);
    if (JSON.stringify(whole) !== JSON.stringify(chunked)) throw new Error("chunking changed the result");
  }), { numRuns: 300 });
  t.pass("chunk-independent");
});

t.test("a huge hostile table is parsed in bounded memory and without throwing", async (t) => {
  const parser = new TcpTableParser({ onRow: () => undefined });
  const junk = new Uint8Array(1 << 20).fill(0x41);
  for (let i = 0; i < 16; i++) parser.push(junk);
  parser.push(new TextEncoder().encode(`\n${ESTAB4}`));
  parser.end();
  t.equal(parser.skipped, 1, "16 MiB without a newline is one skipped line");
  t.equal(parser.rows, 1, "and the row after it still parses");
});
