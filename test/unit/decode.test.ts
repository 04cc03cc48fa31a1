import t from "tap";
import { decodeBatch, EVENT_SIZE } from "../../plugin/ebpf/decode.ts";

function record(fill: (view: DataView, bytes: Uint8Array) => void): Uint8Array {
  const bytes = new Uint8Array(EVENT_SIZE);
  fill(new DataView(bytes.buffer), bytes);
  return bytes;
}

const connectV4 = record((v, b) => {
  v.setBigUint64(0, 123456789n, true);
  v.setUint32(8, 4242, true);
  v.setUint32(12, 4026531840, true);
  b.set([10, 0, 0, 2], 16);
  b.set([10, 0, 0, 1], 32);
  v.setUint16(48, 51000, true);
  v.setUint16(50, 8080, true);
  b[52] = 1;
  b[53] = 4;
  v.setUint16(54, 1, true);
  b.set(new TextEncoder().encode("curl"), 56);
  v.setBigUint64(72, 0xffff888812345678n, true);
});

const closeV6 = record((v, b) => {
  b.set([0xfd, 0, 0, 0x65, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 16);
  b.set([0xfd, 0, 0, 0x65, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 32);
  v.setUint16(48, 8080, true);
  v.setUint16(50, 40000, true);
  b[52] = 3;
  b[53] = 6;
  b.set(new TextEncoder().encode("sérveur-de-test!"), 56); // 16 bytes of UTF-8, no terminator
});

t.test("decodes every field of the shared record layout", async (t) => {
  const batch = new Uint8Array(EVENT_SIZE * 2);
  batch.set(connectV4, 0);
  batch.set(closeV6, EVENT_SIZE);
  const { events, malformed } = decodeBatch(batch);
  t.equal(malformed, 0);
  t.same(events[0], {
    type: "connect", timestampNs: 123456789, pid: 4242, comm: "curl", netns: 4026531840,
    localAddress: "10.0.0.2", localPort: 51000, remoteAddress: "10.0.0.1", remotePort: 8080, cpu: 1, sockCookie: 0x888812345678,
  });
  t.match(events[1], { type: "close", localAddress: "fd00:65::1", remoteAddress: "fd00:65::2", localPort: 8080, remotePort: 40000, pid: 0 });
  t.equal(events[1].comm, "sérveur-de-test", "a full 16-byte comm has no terminator and is read as UTF-8");
});

t.test("a record of unknown type or family is counted, the rest decoded", async (t) => {
  const bad = connectV4.slice();
  bad[52] = 9;
  const badFamily = connectV4.slice();
  badFamily[53] = 5;
  const batch = new Uint8Array(EVENT_SIZE * 3);
  batch.set(bad, 0);
  batch.set(badFamily, EVENT_SIZE);
  batch.set(connectV4, EVENT_SIZE * 2);
  const { events, malformed } = decodeBatch(batch);
  t.equal(malformed, 2);
  t.equal(events.length, 1);
});

t.test("a batch cut inside a record keeps the whole records and counts the tail", async (t) => {
  const batch = new Uint8Array(EVENT_SIZE + 10);
  batch.set(connectV4, 0);
  const { events, malformed } = decodeBatch(batch);
  t.equal(events.length, 1);
  t.equal(malformed, 1);
});

t.test("process names sharing a prefix stay distinct", async (t) => {
  const names = ["python3", "python3.11", "python2", "p", "pythonista-tool", "python3"];
  const batch = new Uint8Array(EVENT_SIZE * names.length);
  names.forEach((name, i) => {
    const r = connectV4.slice();
    r.fill(0, 56, 72);
    r.set(new TextEncoder().encode(name), 56);
    batch.set(r, i * EVENT_SIZE);
  });
  t.same(decodeBatch(batch).events.map((e) => e.comm), names);
});
