/**
 * The plugin process under Node (`node --import tsx plugin/main.ts`): SIGTERM and SIGINT stop it
 * with exit 0 within 2 s and remove both sockets, also with clients connected; a SIGKILLed
 * plugin's leftover sockets are taken over by the next start. Also with a standard health Watch
 * open (it never ends on its own) and during the start-up scan (signals are handled from the start).
 */
import t from "tap";
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, symlinkSync, writeSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { type Client, credentials, makeClientConstructor, type ServiceError, status as GrpcStatus } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { type ConnectionEvent, type EndpointReport, EventType, Source, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { socketsPresent, startPlugin } from "../helpers/plugin-child.ts";
import { httpGet, tempDir, unary } from "../helpers/server-harness.ts";
import { waitFor } from "../helpers/wait.ts";

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  t.test(`${signal} when idle: exit 0 within 2 s, both sockets removed`, async (t) => {
    const plugin = await startPlugin({ runtime: "node" });
    t.teardown(() => plugin.cleanup());
    t.equal(plugin.ready.source, "ebpf");
    t.same(socketsPresent(plugin), { grpc: true, scope: true }, "both sockets while running");
    t.ok(lstatSync(plugin.grpcSocket).isSocket());
    const stopped = await plugin.stop(signal);
    t.same({ code: stopped.code, signal: stopped.signal }, { code: 0, signal: null }, "exit 0");
    t.ok(stopped.elapsedMs < 2000, `exited ${stopped.elapsedMs.toFixed(0)} ms after ${signal} (< 2000)`);
    t.same(socketsPresent(plugin), { grpc: false, scope: false }, "both sockets removed");
    t.notOk(existsSync(join(plugin.dir, "plugins", "endpoint-reporter")), "the Scope plugin directory removed");
    t.ok(plugin.logs.some((l) => l.includes('"msg":"stopped"')));
  });
}

t.test("SIGTERM with clients connected: Watch ended UNAVAILABLE, exit 0 within 2 s, sockets removed", async (t) => {
  const plugin = await startPlugin({ runtime: "node" });
  t.teardown(() => plugin.cleanup());

  const client = plugin.client();
  t.teardown(() => client.close());
  const report = await unary<EndpointReport>((cb) => client.report({ clientId: "lifecycle" }, cb));
  t.equal(report.status?.source, Source.SOURCE_EBPF);
  // Two Watch streams: one reading, one that never reads past the snapshot.
  const ends: Array<Promise<number | "end">> = [];
  for (const id of ["reading", "idle"]) {
    const watch = client.watch({ clientId: id });
    ends.push(new Promise((resolve) => {
      watch.on("error", (error: ServiceError) => resolve(error.code));
      watch.on("end", () => resolve("end"));
    }));
    await new Promise<void>((resolve) => watch.on("data", (e: ConnectionEvent) => e.type === EventType.EVENT_TYPE_SNAPSHOT_COMPLETE && resolve()));
    if (id === "idle") watch.pause();
  }
  // A second gRPC connection with a call in flight when the signal lands.
  const other = plugin.client({ "grpc.use_local_subchannel_pool": 1 });
  t.teardown(() => other.close());
  await unary<TrackerStatus>((cb) => other.getStatus({}, cb));
  // A Scope probe's keep-alive HTTP connection.
  const reply = await httpGet(plugin.scopeSocket, "/report?api_version=1&probe_id=lifecycle");
  t.equal(reply.status, 200);
  const keepAlive = request({ socketPath: plugin.scopeSocket, path: "/report?api_version=1&probe_id=lifecycle2", headers: { connection: "keep-alive" } });
  keepAlive.on("error", () => {});
  await new Promise<void>((resolve) => keepAlive.on("response", (res) => { res.resume(); res.on("end", () => resolve()); }).end());

  const inFlight = unary<TrackerStatus>((cb) => other.getStatus({}, cb)).then(() => "answered", (e: ServiceError) => e.code);
  const stopped = await plugin.stop("SIGTERM");
  t.same({ code: stopped.code, signal: stopped.signal }, { code: 0, signal: null }, `exit 0 (${plugin.logs.slice(-2).join(" | ")})`);
  t.ok(stopped.elapsedMs < 2000, `exited ${stopped.elapsedMs.toFixed(0)} ms after SIGTERM (< 2000)`);
  t.same(socketsPresent(plugin), { grpc: false, scope: false }, "both sockets removed");
  t.same(await Promise.all(ends), [GrpcStatus.UNAVAILABLE, GrpcStatus.UNAVAILABLE], "both Watch streams ended UNAVAILABLE");
  t.ok(["answered", GrpcStatus.UNAVAILABLE].includes(await inFlight as never), "the call in flight was answered or refused, not left hanging");
});

t.test("after SIGKILL the sockets stay behind, and the next start takes them over", async (t) => {
  const dir = tempDir(t);
  const first = await startPlugin({ runtime: "node", dir });
  t.teardown(() => first.cleanup());
  const killed = await first.stop("SIGKILL");
  t.equal(killed.signal, "SIGKILL");
  t.same(socketsPresent(first), { grpc: true, scope: true }, "stale sockets left by the killed plugin");

  const second = await startPlugin({ runtime: "node", dir });
  t.teardown(() => second.cleanup());
  const client = second.client();
  t.teardown(() => client.close());
  const status = await unary<TrackerStatus>((cb) => client.getStatus({}, cb));
  t.equal(status.source, Source.SOURCE_EBPF, "gRPC answers on the taken-over socket");
  t.equal((await httpGet(second.scopeSocket, "/report?api_version=1")).status, 200, "Scope answers on the taken-over socket");
  client.close();
  const stopped = await second.stop("SIGTERM");
  t.equal(stopped.code, 0);
  t.same(socketsPresent(second), { grpc: false, scope: false });
});

t.test("SIGTERM with a standard grpc.health.v1.Health/Watch stream open: exit 0 within 2 s, sockets removed", async (t) => {
  const plugin = await startPlugin({ runtime: "node" });
  t.teardown(() => plugin.cleanup());
  const Health = makeClientConstructor(healthService, "Health");
  const health = new Health(plugin.grpcTarget, credentials.createInsecure()) as Client & Record<string, Function>;
  t.teardown(() => health.close());
  const watch = health.watch({ service: "" });
  const statuses: string[] = [];
  const ended = new Promise<string>((resolve) => {
    watch.on("data", (reply: { status: string }) => statuses.push(reply.status));
    watch.on("error", (error: ServiceError) => resolve(`error ${error.code}`));
    watch.on("end", () => resolve("end"));
  });
  await waitFor("the health Watch's first answer", () => statuses.length > 0, 10_000);
  t.same(statuses, ["SERVING"]);
  const stopped = await plugin.stop("SIGTERM");
  t.same({ code: stopped.code, signal: stopped.signal }, { code: 0, signal: null }, `exit 0 (${plugin.logs.slice(-2).join(" | ")})`);
  t.ok(stopped.elapsedMs < 2000, `exited ${stopped.elapsedMs.toFixed(0)} ms after SIGTERM (< 2000)`);
  t.same(socketsPresent(plugin), { grpc: false, scope: false }, "both sockets removed");
  t.ok(statuses.includes("NOT_SERVING"), `the Watch heard NOT_SERVING before the end (${statuses.join(", ")})`);
  t.match(await ended, /^(end|error \d+)$/, "the Watch stream ended");
});

t.test("SIGTERM during the start-up scan: the scan is abandoned, exit 0 within 2 s, no socket left", async (t) => {
  // A proc root whose one table is 400 MB of TIME_WAIT rows: parsed to the end, the seed takes about 4 s here.
  const dir = tempDir(t);
  const procRoot = join(dir, "proc");
  mkdirSync(join(procRoot, "1", "ns"), { recursive: true });
  mkdirSync(join(procRoot, "1", "net"));
  symlinkSync("net:[4026531999]", join(procRoot, "1", "ns", "net"));
  const row = (i: number) => `${String(i % 10000).padStart(5)}: 0100007F:${(1024 + (i % 60000)).toString(16).toUpperCase().padStart(4, "0")} 0100007F:0050 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0000000000000000\n`;
  const chunk = Array.from({ length: 10_000 }, (_, i) => row(i)).join("");
  const fd = openSync(join(procRoot, "1", "net", "tcp"), "w");
  for (let written = 0; written < 400e6; written += chunk.length) writeSync(fd, chunk);
  closeSync(fd);
  const plugin = await startPlugin({ runtime: "node", args: ["--source", "procfs", "--proc-root", procRoot], readyMessage: "starting", dir: join(dir, "run") });
  t.teardown(() => plugin.cleanup());
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(plugin.logs.some((l) => l.includes('"msg":"ready"')), "still seeding when the signal is sent");
  const stopped = await plugin.stop("SIGTERM");
  t.same({ code: stopped.code, signal: stopped.signal }, { code: 0, signal: null }, `exit 0 (${plugin.logs.slice(-3).join(" | ")})`);
  t.ok(stopped.elapsedMs < 2000, `exited ${stopped.elapsedMs.toFixed(0)} ms after SIGTERM (< 2000)`);
  t.same(socketsPresent(plugin), { grpc: false, scope: false }, "no socket left behind");
  t.ok(plugin.logs.some((l) => l.includes('"msg":"stopped"')));
});
