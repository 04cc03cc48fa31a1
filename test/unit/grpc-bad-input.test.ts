import t from "tap";
import { randomBytes } from "node:crypto";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { Client, credentials, Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import * as pb from "../../plugin/generated/endpoint_reporter.ts";
import { conn, grpcClient, makeBackend, tempDir, unary } from "../helpers/server-harness.ts";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return header;
}

/** Writes raw bytes to the socket and reports what came back and whether the server hung up. */
function rawExchange(path: string, bytes: Buffer, halfClose: boolean): Promise<{ hungUp: boolean; received: Buffer }> {
  return new Promise((resolve) => {
    const socket = netConnect({ path });
    const chunks: Buffer[] = [];
    const finish = (hungUp: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ hungUp, received: Buffer.concat(chunks) });
    };
    const timer = setTimeout(() => finish(false), 3000);
    socket.on("data", (d) => chunks.push(d));
    socket.on("error", () => {});
    socket.on("close", () => finish(true));
    socket.write(bytes, () => {
      if (halfClose) socket.end();
    });
  });
}

/** The GOAWAY error code in the server's reply, if it sent one. */
function goawayCode(received: Buffer): number | undefined {
  for (let pos = 0; pos + 9 <= received.length;) {
    const length = received.readUIntBE(pos, 3);
    if (received[pos + 3] === 0x7 && pos + 9 + 8 <= received.length) return received.readUInt32BE(pos + 9 + 4);
    pos += 9 + length;
  }
  return undefined;
}

t.test("hostile bytes on the gRPC socket: each connection is dropped, the server keeps serving", async (t) => {
  const { table, backend } = makeBackend();
  const baseline = table.subscriberCount;
  table.open(conn());
  const path = join(tempDir(t), "b.sock");
  // Short keepalive: a peer that never answers pings is dropped within a second.
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path }, limits: { keepaliveTimeMs: 300, keepaliveTimeoutMs: 300 } });
  t.teardown(() => server.close());
  const client = grpcClient(t, server.address);
  const stillServing = async (what: string) => {
    const r = await unary<pb.EndpointReport>((cb) => client.report({ clientId: "" }, cb));
    t.equal(r.connections.length, 1, `a good call succeeds after ${what}`);
  };

  const garbage = await rawExchange(path, randomBytes(4096), false);
  t.ok(garbage.hungUp, "garbage instead of the preface: connection closed");
  await stillServing("garbage");

  const http1 = await rawExchange(path, Buffer.from("GET /report HTTP/1.1\r\nHost: x\r\n\r\n"), false);
  t.ok(http1.hungUp, "HTTP/1.1 on the HTTP/2 socket: connection closed");
  await stillServing("an HTTP/1.1 request");

  // A SETTINGS frame that announces 18 bytes and delivers 5, then the peer half-closes.
  const truncated = await rawExchange(path, Buffer.concat([PREFACE, frameHeader(18, 0x4, 0, 0), Buffer.alloc(5)]), true);
  t.ok(truncated.hungUp, "truncated frame: connection closed");
  await stillServing("a truncated frame");

  // A DATA frame of 16 MiB - 1, far past the 16 KiB SETTINGS_MAX_FRAME_SIZE the server announced.
  const oversized = await rawExchange(path, Buffer.concat([PREFACE, frameHeader(0, 0x4, 0, 0), frameHeader(0xffffff, 0x0, 0, 1), Buffer.alloc(64)]), false);
  t.ok(oversized.hungUp, "oversized frame: connection closed (once the peer ignores keepalive pings)");
  t.equal(goawayCode(oversized.received), 0x6, "with GOAWAY FRAME_SIZE_ERROR");
  await stillServing("an oversized frame");

  // Many at once.
  await Promise.all(Array.from({ length: 20 }, () => rawExchange(path, randomBytes(1024), true)));
  await stillServing("20 concurrent garbage connections");
  t.equal(server.watcherCount(), 0);
  t.equal(table.subscriberCount, baseline, "no subscription leaked");
});

t.test("bad requests get clear statuses, and the next good call succeeds", async (t) => {
  const { backend } = makeBackend();
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "tcp", host: "127.0.0.1", port: 0 } });
  t.teardown(() => server.close());
  const client = grpcClient(t, server.address);
  const raw = new Client(server.address, credentials.createInsecure());
  t.teardown(() => raw.close());
  const rawCall = (path: string, body: Buffer) =>
    new Promise<ServiceError>((resolve, reject) => {
      raw.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, body, new Metadata(), {}, (error) => (error ? resolve(error) : reject(new Error("unexpected success"))));
    });
  const good = () => unary<pb.TrackerStatus>((cb) => client.getStatus({}, cb));

  // Field 1 (client_id), length-delimited, claiming far more bytes than follow.
  const malformed = await rawCall("/scope.endpoint.v1.EndpointReporter/Report", Buffer.from([0x0a, 0xff, 0xff, 0x03, 0x41]));
  t.equal(malformed.code, GrpcStatus.INTERNAL, "malformed protobuf is rejected");
  t.match(malformed.details, /deserializ/i);
  await good();

  const wrongWireType = await rawCall("/scope.endpoint.v1.EndpointReporter/Report", Buffer.from([0x0f, 0x01]));
  t.equal(wrongWireType.code, GrpcStatus.INTERNAL, "an invalid wire type is rejected");
  await good();

  const unknown = await rawCall("/scope.endpoint.v1.EndpointReporter/Explode", Buffer.alloc(0));
  t.equal(unknown.code, GrpcStatus.UNIMPLEMENTED);

  const big = pb.ReportRequest.encode({ clientId: "x".repeat(100_000) }).finish();
  const oversized = await rawCall("/scope.endpoint.v1.EndpointReporter/Report", Buffer.from(big));
  t.equal(oversized.code, GrpcStatus.RESOURCE_EXHAUSTED, "a request over maxReceiveMessageBytes");
  await good();

  await t.rejects(unary((cb) => client.report({ clientId: "a\u0000b" }, cb)), { code: GrpcStatus.INVALID_ARGUMENT, details: /control characters/ });
  await t.rejects(unary((cb) => client.report({ clientId: "x".repeat(300) }, cb)), { code: GrpcStatus.INVALID_ARGUMENT, details: /longer than 256/ });
  t.equal(backend.clientCount(), 0, "no client was registered by a bad request");
  await good();
});

t.test("max concurrent streams is announced to clients", async (t) => {
  const { backend } = makeBackend();
  const path = join(tempDir(t), "m.sock");
  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path }, limits: { maxConcurrentStreams: 7 } });
  t.teardown(() => server.close());
  const { connect } = await import("node:http2");
  const socket = netConnect({ path });
  const session = connect("http://localhost", { createConnection: () => socket });
  session.on("error", () => {});
  const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve) => session.once("remoteSettings", resolve));
  t.equal(settings.maxConcurrentStreams, 7);
  session.destroy();
});
