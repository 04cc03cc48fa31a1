import t, { type Test } from "tap";
import { execFile } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import { EXIT_OK, EXIT_SERVER_ERROR, EXIT_UNREACHABLE, EXIT_USAGE, runCli } from "../../plugin/cli/main.ts";
import { closeConn, conn, eventually, makeBackend, selfSigned, tempDir } from "../helpers/server-harness.ts";

function capture(signal?: AbortSignal) {
  const out: string[] = [];
  const err: string[] = [];
  return {
    io: { stdout: (s: string) => void out.push(s), stderr: (s: string) => void err.push(s), signal },
    stdout: () => out.join(""),
    stderr: () => err.join(""),
  };
}

async function serve(t: Test) {
  const { table, backend } = makeBackend();
  table.open(conn({ localAddress: "10.0.0.1", localPort: 40000, remoteAddress: "10.0.0.2", remotePort: 80, pid: 1234, comm: "curl" }));
  table.open(conn({ localAddress: "::1", localPort: 8080, remoteAddress: "::1", remotePort: 51000, direction: "incoming", pid: 0, comm: "", source: "procfs", netns: 0 }));
  const socket = join(tempDir(t), "cli.sock");
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: socket } });
  t.teardown(() => server.close());
  return { table, backend, server, socket };
}

t.test("the table, like ss", async (t) => {
  const { socket } = await serve(t);
  const c = capture();
  t.equal(await runCli(["--socket", socket], c.io), EXIT_OK);
  const lines = c.stdout().trimEnd().split("\n");
  t.match(lines[0], /^Local Address:Port\s+Peer Address:Port\s+Dir\s+Process\s+Netns\s+Source$/);
  t.match(lines[1], /^\[::1\]:8080\s+\[::1\]:51000\s+in\s+-\s+-\s+procfs$/);
  t.match(lines[2], /^10\.0\.0\.1:40000\s+10\.0\.0\.2:80\s+out\s+curl\/1234\s+4026531840\s+ebpf$/);
  t.equal(lines.length, 3);
  t.equal(c.stderr(), "");
});

t.test("--json for scripts; the anonymous read leaves closed connections to named clients", async (t) => {
  const { socket, backend } = await serve(t);
  const c = capture();
  t.equal(await runCli(["--socket", socket, "--json"], c.io), EXIT_OK);
  const doc = JSON.parse(c.stdout());
  t.equal(doc.hostId, "h");
  t.equal(doc.status.source, "ebpf");
  t.same(doc.connections.find((x: { localPort: number }) => x.localPort === 40000), {
    localAddress: "10.0.0.1", localPort: 40000, remoteAddress: "10.0.0.2", remotePort: 80, netns: 4026531840,
    pid: 1234, comm: "curl", direction: "outgoing", closed: false, source: "ebpf",
  });
  t.equal(doc.connections.find((x: { localPort: number }) => x.localPort === 8080).direction, "incoming");
  t.equal(backend.clientCount(), 0, "the CLI registers no client");
});

t.test("status: the live source, why, since when, and the counters", async (t) => {
  const { socket } = await serve(t);
  const c = capture();
  t.equal(await runCli(["--socket", socket, "status"], c.io), EXIT_OK);
  const text = c.stdout();
  t.match(text, /^source: +eBPF$/m);
  t.match(text, /^since: +2024-01-02T03:04:05\.678Z \(\d+d\d+h ago\)$/m);
  t.match(text, /^reason: +eBPF loaded \(kernel 6\.18, BTF present\)$/m);
  t.match(text, /^clients: +0 with closed-connection buffers, 0 watching$/m);
  t.match(text, /^ +events +42$/m);
  t.match(text, /^ +lost +1$/m);

  const j = capture();
  t.equal(await runCli(["status", "--json", "--socket", socket], j.io), EXIT_OK);
  const doc = JSON.parse(j.stdout());
  t.match(doc, { source: "ebpf", since: "2024-01-02T03:04:05.678Z", reason: /eBPF loaded/, counters: { events: 42, lost: 1 }, clients: 0, watchers: 0 });
});

t.test("--watch follows opens and closes until interrupted", async (t) => {
  const { socket, table, server } = await serve(t);
  const abort = new AbortController();
  const c = capture(abort.signal);
  const done = runCli(["--socket", socket, "--watch"], c.io);
  await eventually(() => c.stdout().includes("following opens"), 5000, "snapshot");
  const late = conn({ localPort: 40001, comm: "wget", pid: 99 });
  table.open(late);
  closeConn(table, late);
  await eventually(() => (c.stdout().match(/^[+-] /gm) ?? []).length === 2, 5000, "live lines");
  abort.abort();
  t.equal(await done, EXIT_OK, "Ctrl-C ends the watch cleanly");
  const lines = c.stdout().trimEnd().split("\n");
  t.match(lines[0], /^Event\s+Local Address:Port/);
  t.match(lines.slice(1, 3).sort().join("\n"), /^=\s+10\.0\.0\.1:40000.*\n=\s+\[::1\]:8080/);
  t.equal(lines[3], "--- 2 open connections; following opens (+) and closes (-) ---");
  t.match(lines[4], /^\+\s+10\.0\.0\.1:40001\s+10\.0\.0\.2:80\s+out\s+wget\/99/);
  t.match(lines[5], /^-\s+10\.0\.0\.1:40001/);
  await eventually(() => server.watcherCount() === 0, 5000, "the server saw the watch end");
});

t.test("--watch --json is NDJSON; a server going away is exit 2", async (t) => {
  const { socket, table, server } = await serve(t);
  const c = capture();
  const done = runCli(["--socket", socket, "--watch", "--json"], c.io);
  await eventually(() => c.stdout().includes("snapshot_complete"), 5000, "snapshot");
  table.open(conn({ localPort: 40009 }));
  await eventually(() => c.stdout().includes('"type":"open"'), 5000, "live event");
  const events = c.stdout().trimEnd().split("\n").map((l) => JSON.parse(l));
  t.same(events.map((e) => e.type), ["snapshot", "snapshot", "snapshot_complete", "open"]);
  t.equal(events[2].snapshotCount, 2);
  t.equal(events[3].connection.localPort, 40009);
  await server.close();
  t.equal(await done, EXIT_UNREACHABLE);
  t.match(c.stderr(), /lost the endpoint reporter at unix:\/\/.*cli\.sock: server shutting down/);
});

t.test("not reachable: a clear message and exit code 2", async (t) => {
  const dir = tempDir(t);
  const missing = capture();
  t.equal(await runCli(["--socket", join(dir, "nope.sock")], missing.io), EXIT_UNREACHABLE);
  t.match(missing.stderr(), /cannot reach the endpoint reporter: .*nope\.sock: ENOENT \(is the endpoint reporter running\? see --socket\)/);

  // A socket file nobody listens on any more.
  const stale = createServer();
  await new Promise<void>((r) => stale.listen(join(dir, "live.sock"), r));
  const { renameSync } = await import("node:fs");
  renameSync(join(dir, "live.sock"), join(dir, "stale.sock"));
  await new Promise<void>((r) => stale.close(() => r()));
  const refused = capture();
  t.equal(await runCli(["--socket", join(dir, "stale.sock"), "--timeout", "500", "status"], refused.io), EXIT_UNREACHABLE);
  t.match(refused.stderr(), /cannot reach the endpoint reporter at unix:\/\/.*stale\.sock/);

  const tcp = capture();
  t.equal(await runCli(["--address", "127.0.0.1:1", "--timeout", "500"], tcp.io), EXIT_UNREACHABLE);
  t.match(tcp.stderr(), /cannot reach the endpoint reporter at 127\.0\.0\.1:1/);
});

t.test("usage errors are exit 64, --help is 0", async (t) => {
  for (const argv of [["bogus"], ["--nope"], ["--socket", "a", "--address", "b:1"], ["status", "--watch"], ["--timeout", "-1"], ["--address", "no-port"], ["--tls-ca", "x"], ["--address", "h:1", "--tls-cert", "c"]]) {
    const c = capture();
    t.equal(await runCli(argv, c.io), EXIT_USAGE, argv.join(" "));
    t.match(c.stderr(), /^endpoint-reporter-cli: [^]*\nusage: /);
  }
  const help = capture();
  t.equal(await runCli(["--help"], help.io), EXIT_OK);
  t.match(help.stdout(), /^usage: endpoint-reporter-cli/);
});

t.test("TLS over TCP", async (t) => {
  const dir = tempDir(t);
  const cert = selfSigned(dir, "server");
  const { backend } = makeBackend();
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "tcp", host: "127.0.0.1", port: 0, tls: { certFile: cert.cert, keyFile: cert.key } } });
  t.teardown(() => server.close());
  const c = capture();
  t.equal(await runCli(["--address", `127.0.0.1:${server.port}`, "--tls-ca", cert.cert, "status"], c.io), EXIT_OK);
  t.match(c.stdout(), /^source: +eBPF$/m);
  const plain = capture();
  t.equal(await runCli(["--address", `127.0.0.1:${server.port}`, "--timeout", "500", "status"], plain.io), EXIT_UNREACHABLE, "plaintext to a TLS server");
  const badCa = capture();
  t.equal(await runCli(["--address", `127.0.0.1:${server.port}`, "--tls-ca", join(dir, "missing.pem")], badCa.io), EXIT_UNREACHABLE);
  t.match(badCa.stderr(), /cannot read CA file/);
  t.equal(EXIT_SERVER_ERROR, 1);
});

t.test("the real program: exit status and stderr", async (t) => {
  const entry = fileURLToPath(new URL("../../plugin/cli/endpoint-reporter-cli.ts", import.meta.url));
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ["--import", "tsx", entry, ...args], { timeout: 15_000 }, (error, stdout, stderr) => {
        resolve({ code: error ? (error as { code?: number }).code ?? null : 0, stdout, stderr });
      });
    });
  const { socket } = await serve(t);
  const [down, up] = await Promise.all([run(["--socket", join(tempDir(t), "absent.sock")]), run(["--socket", socket, "--json", "status"])]);
  t.equal(down.code, 2, "unreachable: exit 2");
  t.match(down.stderr, /cannot reach the endpoint reporter/);
  t.equal(up.code, 0);
  t.equal(JSON.parse(up.stdout).source, "ebpf");
});
