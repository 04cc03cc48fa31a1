import t, { type Test } from "tap";
import { randomBytes } from "node:crypto";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { startScopePlugin } from "../../plugin/servers/scope/plugin-server.ts";
import type { ReportBackend } from "../../plugin/model/backend.ts";
import { conn, httpGet, makeBackend, tempDir } from "../helpers/server-harness.ts";

/** Sends raw bytes; resolves with what came back once the server hangs up (or after `waitMs`). */
function raw(path: string, bytes: Buffer | string, waitMs = 3000): Promise<{ reply: string; hungUp: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = netConnect({ path });
    let reply = "";
    const finish = (hungUp: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ reply, hungUp, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => (reply += d));
    socket.on("error", () => {});
    socket.on("close", () => finish(true));
    socket.write(bytes);
  });
}

async function setup(t: Test, backend?: ReportBackend) {
  const made = makeBackend();
  made.table.open(conn());
  const p = await startScopePlugin({ backend: backend ?? made.backend, hostId: "h", root: join(tempDir(t), "plugins") });
  t.teardown(() => p.close());
  const ok = async (what: string) => t.equal((await httpGet(p.socketPath, "/report?api_version=1&probe_id=p")).status, 200, `still serving after ${what}`);
  return { p, ok, ...made };
}

t.test("garbage, oversized and truncated requests get 4xx or a hang-up, never a crash", async (t) => {
  const { p, ok } = await setup(t);

  const garbage = await raw(p.socketPath, randomBytes(2048));
  t.match(garbage.reply, /^HTTP\/1\.1 400 /, "random bytes: 400");
  t.ok(garbage.hungUp);
  await ok("garbage");

  const bigHeaders = await raw(p.socketPath, `GET /report HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`);
  t.match(bigHeaders.reply, /^HTTP\/1\.1 431 /, "64 KiB of headers: 431");
  await ok("oversized headers");

  const bigUrl = await raw(p.socketPath, `GET /report?probe_id=${"a".repeat(64 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.match(bigUrl.reply, /^HTTP\/1\.1 431 /, "64 KiB request line: 431");
  await ok("an oversized URL");

  const bigBody = await raw(p.socketPath, Buffer.concat([
    Buffer.from("POST /report HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"),
    Buffer.alloc(256 * 1024, 0x41),
  ]));
  t.ok(bigBody.hungUp, "a 100 MiB body is not read: connection dropped");
  t.match(bigBody.reply, /^HTTP\/1\.1 405 /, "after a 405");
  await ok("an oversized body");

  const badChunks = await raw(p.socketPath, "POST /report HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  t.match(badChunks.reply, /HTTP\/1\.1 (400|405) /, "broken chunked encoding");
  await ok("broken chunked encoding");

  const badVersion = await raw(p.socketPath, "GET /report HTTP/9.9\r\nHost: x\r\n\r\n");
  t.match(badVersion.reply, /^HTTP\/1\.1 (400|505) /);
  await ok("a bad HTTP version");

  const slow = await raw(p.socketPath, "GET /report HTTP/1.1\r\nHost: x\r\n", 6000);
  t.ok(slow.hungUp, "headers that never finish are timed out");
  t.ok(slow.ms < 5000, `within ${slow.ms} ms`);
  await ok("a slowloris client");

  await Promise.all(Array.from({ length: 30 }, () => raw(p.socketPath, randomBytes(512))));
  await ok("30 concurrent garbage connections");
});

t.test("a backend that fails: the previous report keeps being served", async (t) => {
  const made = makeBackend();
  made.table.open(conn());
  let fail = false;
  const flaky: ReportBackend = {
    ...made.backend,
    report: (id) => made.backend.report(id),
    openConnections: () => {
      if (fail) throw new Error("table exploded");
      return made.backend.openConnections();
    },
    subscribe: (listener) => made.backend.subscribe(listener),
    status: () => made.backend.status(),
    clientCount: () => made.backend.clientCount(),
  };
  const { p } = await setup(t, flaky);
  const before = (await httpGet(p.socketPath, "/report")).body;
  fail = true;
  made.table.open(conn({ localPort: 5 }));
  await t.rejects(p.cache.refresh(), /table exploded/);
  const during = await httpGet(p.socketPath, "/report");
  t.equal(during.status, 200);
  t.equal(during.body, before, "the last good report");
  fail = false;
  await p.cache.refresh();
  t.not((await httpGet(p.socketPath, "/report")).body, before, "and a fresh one once the backend recovers");
});
