import t from "tap";
import { connect as http2Connect, constants as h2 } from "node:http2";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { type ServiceError, status as GrpcStatus } from "@grpc/grpc-js";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import * as pb from "../../plugin/generated/endpoint_reporter.ts";
import { closeConn, conn, eventually, grpcClient, grpcFrame, makeBackend, tempDir, unary } from "../helpers/server-harness.ts";

t.test("Watch: snapshot, completion marker, then live opens and closes in order", async (t) => {
  const { table, backend } = makeBackend();
  const baseline = table.subscriberCount;
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: join(tempDir(t), "w.sock") } });
  t.teardown(() => server.close());
  const client = grpcClient(t, server.address);
  const a = conn({ localPort: 1 });
  const b = conn({ localPort: 2, direction: "incoming" });
  table.open(a);
  table.open(b);

  const events: pb.ConnectionEvent[] = [];
  const call = client.watch({ clientId: "watcher-1" });
  call.on("data", (e: pb.ConnectionEvent) => events.push(e));
  const ended = new Promise<ServiceError>((resolve) => call.on("error", resolve));

  await eventually(() => events.length === 3, 5000, "snapshot");
  t.same(events.map((e) => e.type), [pb.EventType.EVENT_TYPE_SNAPSHOT, pb.EventType.EVENT_TYPE_SNAPSHOT, pb.EventType.EVENT_TYPE_SNAPSHOT_COMPLETE]);
  t.same(events.slice(0, 2).map((e) => e.connection?.localPort), [1, 2]);
  t.equal(events[2].connection, undefined, "the marker carries no connection");
  t.equal(events[2].snapshotCount, 2);
  t.equal(server.watcherCount(), 1);
  t.equal(table.subscriberCount, baseline + 1);
  t.equal((await unary<pb.TrackerStatus>((cb) => client.getStatus({}, cb))).watchers, 1);

  const c = conn({ localPort: 3 });
  table.open(c);
  closeConn(table, a);
  await eventually(() => events.length === 5, 5000, "live events");
  t.same(events.slice(3).map((e) => [e.type, e.connection?.localPort, e.connection?.closed]), [
    [pb.EventType.EVENT_TYPE_OPEN, 3, false],
    [pb.EventType.EVENT_TYPE_CLOSE, 1, true],
  ]);
  t.same(events.map((e) => e.sequence), [1, 2, 3, 4, 5], "sequence numbers from 1");

  call.cancel();
  t.equal((await ended).code, GrpcStatus.CANCELLED);
  await eventually(() => server.watcherCount() === 0, 5000, "watch cleanup");
  t.equal(table.subscriberCount, baseline, "no subscription leaked");
});

t.test("Watch: an empty table still gets the completion marker", async (t) => {
  const { backend } = makeBackend();
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "tcp", host: "127.0.0.1", port: 0 } });
  t.teardown(() => server.close());
  const call = grpcClient(t, server.address).watch({ clientId: "" });
  const first = await new Promise<pb.ConnectionEvent>((resolve) => call.once("data", resolve));
  t.equal(first.type, pb.EventType.EVENT_TYPE_SNAPSHOT_COMPLETE);
  t.equal(first.snapshotCount, 0);
  call.on("error", () => {});
  call.cancel();
});

t.test("Watch: a client vanishing mid-stream leaves no stream or subscription behind", async (t) => {
  const { table, backend } = makeBackend();
  const baseline = table.subscriberCount;
  const path = join(tempDir(t), "v.sock");
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path } });
  t.teardown(() => server.close());
  for (let i = 0; i < 100; i++) table.open(conn({ localPort: 10_000 + i }));

  // A raw HTTP/2 peer that asks for a Watch, reads a little, and then its socket dies.
  const socket = netConnect({ path });
  const session = http2Connect("http://localhost", { createConnection: () => socket });
  session.on("error", () => {});
  const frame = grpcFrame(pb.WatchRequest.encode({ clientId: "vanishing" }).finish());
  const stream = session.request({
    [h2.HTTP2_HEADER_METHOD]: "POST",
    [h2.HTTP2_HEADER_PATH]: "/scope.endpoint.v1.EndpointReporter/Watch",
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.on("error", () => {});
  stream.end(frame);
  await new Promise((resolve) => stream.once("data", resolve));
  t.equal(server.watcherCount(), 1);

  socket.destroy();
  // Keep the table busy while the peer is gone: writes to a dead stream must not throw.
  for (let i = 0; i < 200; i++) table.open(conn({ localPort: 20_000 + i }));
  await eventually(() => server.watcherCount() === 0, 5000, "vanished watch cleanup");
  t.equal(table.subscriberCount, baseline, "subscription released");
  for (let i = 0; i < 200; i++) closeConn(table, conn({ localPort: 20_000 + i }));

  const report = await unary<pb.EndpointReport>((cb) => grpcClient(t, server.address).report({ clientId: "" }, cb));
  t.equal(report.connections.length, 100, "the server still serves");
});

t.test("Watch: a reader that stops reading is cut off with RESOURCE_EXHAUSTED; one that reads is not", async (t) => {
  const { table, backend } = makeBackend();
  const baseline = table.subscriberCount;
  const server = await startGrpcServer({
    backend,
    hostId: "h",
    listen: { kind: "unix", path: join(tempDir(t), "s.sock") },
    limits: { maxWatchQueue: 500 },
  });
  t.teardown(() => server.close());
  const client = grpcClient(t, server.address);

  const fast = client.watch({ clientId: "reader" });
  let fastReceived = 0;
  fast.on("data", () => fastReceived++);
  fast.on("error", () => {});

  const slow = client.watch({ clientId: "sluggard" });
  let slowReceived = 0;
  const failed = new Promise<ServiceError>((resolve) => slow.on("error", resolve));
  await new Promise((resolve) => slow.once("data", resolve));
  slow.pause();
  slow.on("data", () => slowReceived++);
  await eventually(() => fastReceived === 1, 5000, "fast snapshot");

  // Bursts well under the queue bound, each read in full by the reading watcher before the next:
  // only the paused one falls behind, until the HTTP/2 window and its bounded queue are full.
  let changes = 0;
  for (let round = 0; round < 1000 && server.watcherCount() === 2; round++) {
    for (let i = 0; i < 25; i++) {
      const c = conn({ localPort: (changes % 60_000) + 1 });
      table.open(c);
      closeConn(table, c);
      changes += 2;
    }
    await eventually(() => fastReceived === changes + 1, 5000, "the reading watcher keeping up");
  }
  t.equal(server.watcherCount(), 1, `the server dropped the slow watcher after ${changes} changes`);
  t.ok(changes > 500, "not before its queue was full");
  t.equal(table.subscriberCount, baseline + 1, "and released its subscription");
  t.equal(fastReceived, changes + 1, "the reading watcher got every change");

  slow.resume();
  const error = await failed;
  t.equal(error.code, GrpcStatus.RESOURCE_EXHAUSTED);
  t.match(error.details, /too slow/);
  t.ok(slowReceived > 0 && slowReceived < changes, `the slow reader still got what was already sent (${slowReceived} events)`);

  const status = await unary<pb.TrackerStatus>((cb) => client.getStatus({}, cb));
  t.equal(status.watchers, 1);
  fast.cancel();
  await eventually(() => server.watcherCount() === 0, 5000, "cleanup");
  t.equal(table.subscriberCount, baseline);
});

t.test("close() ends live watches with UNAVAILABLE and removes the socket", async (t) => {
  const { table, backend } = makeBackend();
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: join(tempDir(t), "c.sock") } });
  const call = grpcClient(t, server.address).watch({ clientId: "" });
  const failed = new Promise<ServiceError>((resolve) => call.on("error", resolve));
  await new Promise((resolve) => call.once("data", resolve));
  call.on("data", () => {});
  await server.close();
  t.equal((await failed).code, GrpcStatus.UNAVAILABLE);
  t.equal(table.subscriberCount, 1);
});
