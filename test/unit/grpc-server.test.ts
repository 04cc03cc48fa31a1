import t, { type Test } from "tap";
import { statSync, writeFileSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { renameSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { credentials, loadPackageDefinition, makeClientConstructor, type Client, type ClientDuplexStream } from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { service as healthService } from "grpc-health-check";
import { startGrpcServer, type GrpcServerHandle } from "../../plugin/servers/grpc/server.ts";
import * as pb from "../../plugin/generated/endpoint_reporter.ts";
import { closeConn, conn, grpcClient, makeBackend, STATUS, tempDir, unary } from "../helpers/server-harness.ts";
import { PluginError } from "../../plugin/errors.ts";

const transports = [
  { name: "unix socket", listen: (dir: string) => ({ kind: "unix" as const, path: join(dir, "er.sock") }) },
  { name: "tcp 127.0.0.1", listen: () => ({ kind: "tcp" as const, host: "127.0.0.1", port: 0 }) },
];

async function serve(t: Test, listen: Parameters<typeof startGrpcServer>[0]["listen"]) {
  const { table, backend } = makeBackend();
  const server = await startGrpcServer({ backend, hostId: "host-a", listen });
  t.teardown(() => server.close());
  return { table, backend, server, client: grpcClient(t, server.address) };
}

const ports = (r: pb.EndpointReport) => r.connections.map((c) => [c.localPort, c.closed]).sort();

for (const transport of transports) {
  t.test(`Report over ${transport.name}`, async (t) => {
    const { table, server, client } = await serve(t, transport.listen(tempDir(t)));
    const report = (clientId: string) => unary<pb.EndpointReport>((cb) => client.report({ clientId }, cb));
    const a = conn({ localPort: 1001 });
    const b = conn({ localPort: 1002, direction: "incoming", remotePort: 55000, pid: 0, comm: "" });
    table.open(a);

    const first = await report("alpha");
    t.equal(first.firstReport, true, "the first report registers the client");
    t.equal(first.hostId, "host-a");
    t.same(ports(first), [[1001, false]]);
    t.same(first.connections[0], {
      localAddress: "10.0.0.1", localPort: 1001, remoteAddress: "10.0.0.2", remotePort: 80, networkNamespace: 4026531840,
      pid: 1234, comm: "curl", direction: pb.Direction.DIRECTION_OUTGOING, closed: false, source: pb.Source.SOURCE_EBPF,
      natLocalAddress: "", natLocalPort: 0, natRemoteAddress: "", natRemotePort: 0,
    });
    t.equal(first.status?.reason, STATUS.reason);
    t.equal(first.status?.since?.getTime(), STATUS.sinceMs);

    t.equal((await report("beta")).firstReport, true);
    table.open(b);
    closeConn(table, a);
    const c = conn({ localPort: 1003 });
    table.open(c);
    closeConn(table, c);

    const second = await report("alpha");
    t.equal(second.firstReport, false);
    t.same(ports(second), [[1001, true], [1002, false], [1003, true]], "closes since the last report, once");
    t.same(second.connections.find((x) => x.localPort === 1002)?.direction, pb.Direction.DIRECTION_INCOMING);
    t.same(ports(await report("alpha")), [[1002, false]], "not twice");
    t.same(ports(await report("beta")), [[1001, true], [1002, false], [1003, true]], "another client id sees them too");
    t.same(ports(await report("beta")), [[1002, false]]);

    table.open(a);
    closeConn(table, a);
    const anonymous = await report("");
    t.same(ports(anonymous), [[1002, false]], "an empty client_id gets open connections only");
    t.equal(anonymous.firstReport, false);
    t.same(ports(await report("alpha")), [[1001, true], [1002, false]], "anonymous reads take nothing from named clients");
    t.ok(server.address.length > 0);
  });

  t.test(`GetStatus, health and reflection over ${transport.name}`, async (t) => {
    const { backend, server, client } = await serve(t, transport.listen(tempDir(t)));
    await unary((cb) => client.report({ clientId: "x" }, cb));
    const status = await unary<pb.TrackerStatus>((cb) => client.getStatus({}, cb));
    t.equal(status.source, pb.Source.SOURCE_EBPF);
    t.equal(status.reason, STATUS.reason);
    t.equal(status.since?.toISOString(), new Date(STATUS.sinceMs).toISOString());
    t.equal(status.sinceUnixMs, STATUS.sinceMs);
    t.equal(status.counters?.events, 42);
    t.equal(status.counters?.lost, 1);
    t.equal(status.clients, backend.clientCount());
    t.equal(status.clients, 1);
    t.equal(status.watchers, 0);

    const Health = makeClientConstructor(healthService, "Health");
    const health = new Health(server.address, credentials.createInsecure()) as Client & Record<string, Function>;
    t.teardown(() => health.close());
    for (const service of ["", "scope.endpoint.v1.EndpointReporter"]) {
      const reply = await unary<{ status: string }>((cb) => health.check({ service }, cb));
      t.equal(reply.status, "SERVING", `health of ${JSON.stringify(service)}`);
    }
    await t.rejects(unary((cb) => health.check({ service: "no.such.Service" }, cb)), { code: 5 }, "unknown service is NOT_FOUND");

    const services = await reflectionList(server);
    t.ok(services.includes("scope.endpoint.v1.EndpointReporter"), "reflection lists EndpointReporter");
    t.ok(services.includes("grpc.health.v1.Health"), "reflection lists Health");
    const file = await reflectionFileFor(server, "scope.endpoint.v1.EndpointReporter");
    t.ok(file.some((b) => b.includes("endpoint_reporter.proto")), "reflection serves the descriptor");
    t.ok(file.some((b) => b.includes("google/protobuf/timestamp.proto")), "and its imports");
  });
}

t.test("Unix socket: mode 0600, stale socket replaced, live or non-socket paths refused, removed on close", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "sub", "er.sock");
  const { backend } = makeBackend();

  // A stale socket: bound, renamed away from its listener's name, listener gone.
  const { mkdirSync } = await import("node:fs");
  mkdirSync(join(dir, "sub"));
  const stale = createServer();
  await new Promise<void>((r) => stale.listen(join(dir, "sub", "old.sock"), r));
  renameSync(join(dir, "sub", "old.sock"), path);
  await new Promise<void>((r) => stale.close(() => r()));
  t.ok(statSync(path).isSocket(), "stale socket in place");

  const server = await startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path } });
  t.equal(statSync(path).mode & 0o777, 0o600, "socket mode 0600");
  await unary((cb) => grpcClient(t, server.address).getStatus({}, cb));

  await t.rejects(startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path } }), { code: "ERR_CONFIG", message: /already listening/ }, "a live server is not replaced");
  await unary((cb) => grpcClient(t, server.address).getStatus({}, cb));

  await server.close();
  t.throws(() => statSync(path), { code: "ENOENT" }, "socket removed on close");

  const file = join(dir, "file.sock");
  writeFileSync(file, "precious");
  await t.rejects(startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: file } }), { code: "ERR_CONFIG", message: /not a socket/ });
  t.equal(readFileSync(file, "utf8"), "precious", "a non-socket file is left alone");

  await t.rejects(startGrpcServer({ backend, hostId: "h", listen: { kind: "unix", path: join(dir, "x".repeat(120)) } }), { code: "ERR_CONFIG", message: /107 bytes/ });
  await t.rejects(startGrpcServer({ backend, hostId: "h", listen: { kind: "tcp", host: "127.0.0.1", port: 0 }, limits: { maxWatchQueue: 0 } }), PluginError);
});

// Reflection through a real client: the reflection proto loaded with proto-loader, as grpcurl would.
const reflectionProto = fileURLToPath(new URL("../../node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto", import.meta.url));

function reflectionCall(server: GrpcServerHandle, request: object): Promise<Record<string, any>> {
  const definition = protoLoader.loadSync(reflectionProto, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
  const pkg = loadPackageDefinition(definition) as any;
  const client = new pkg.grpc.reflection.v1.ServerReflection(server.address, credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const call: ClientDuplexStream<object, Record<string, any>> = client.serverReflectionInfo();
    call.on("data", (response) => {
      resolve(response);
      call.end();
    });
    call.on("error", reject);
    call.on("end", () => client.close());
    call.write(request);
  });
}

async function reflectionList(server: GrpcServerHandle): Promise<string[]> {
  const response = await reflectionCall(server, { listServices: "*" });
  return response.listServicesResponse.service.map((s: { name: string }) => s.name);
}

async function reflectionFileFor(server: GrpcServerHandle, symbol: string): Promise<string[]> {
  const response = await reflectionCall(server, { fileContainingSymbol: symbol });
  return response.fileDescriptorResponse.fileDescriptorProto.map((b: Buffer) => Buffer.from(b).toString("latin1"));
}

/** Several requests on one reflection stream, answered in order, for the v1 or the v1alpha service. */
function reflectionStream(server: GrpcServerHandle, version: "v1" | "v1alpha", requests: object[]): Promise<Array<Record<string, any>>> {
  const proto = fileURLToPath(new URL(`../../node_modules/@grpc/reflection/build/proto/grpc/reflection/${version}/reflection.proto`, import.meta.url));
  const definition = protoLoader.loadSync(proto, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
  const pkg = loadPackageDefinition(definition) as any;
  const client = new pkg.grpc.reflection[version].ServerReflection(server.address, credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const answers: Array<Record<string, any>> = [];
    const call: ClientDuplexStream<object, Record<string, any>> = client.serverReflectionInfo();
    call.on("data", (response) => answers.push(response));
    call.on("error", reject);
    call.on("end", () => {
      client.close();
      resolve(answers);
    });
    for (const request of requests) call.write(request);
    call.end();
  });
}

const fileNames = (answer: Record<string, any>) =>
  answer.fileDescriptorResponse.fileDescriptorProto.map((b: Buffer) => /^\n.(.+?\.proto)/s.exec(Buffer.from(b).toString("latin1"))?.[1]);

t.test("reflection, v1 and v1alpha: lookups by symbol, method and file name, each with its imports; unknown names are NOT_FOUND answers", async (t) => {
  const { server } = await serve(t, { kind: "tcp", host: "127.0.0.1", port: 0 });
  for (const version of ["v1", "v1alpha"] as const) {
    const answers = await reflectionStream(server, version, [
      { listServices: "" },
      { fileContainingSymbol: "scope.endpoint.v1.EndpointReporter.Report" },
      { fileContainingSymbol: "scope.endpoint.v1.Connection" },
      { fileByFilename: "health/v1/health.proto" },
      { fileContainingSymbol: "no.such.Symbol" },
      { fileByFilename: "nope.proto" },
      { allExtensionNumbersOfType: "scope.endpoint.v1.Connection" },
    ]);
    t.equal(answers.length, 7, `${version}: one answer per request, on one stream`);
    t.same(answers[0].listServicesResponse.service.map((s: { name: string }) => s.name).sort(), [
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "scope.endpoint.v1.EndpointReporter",
    ], `${version}: every service the server serves`);
    t.same(fileNames(answers[1]), ["endpoint_reporter.proto", "google/protobuf/timestamp.proto"], `${version}: a method's file, then its import`);
    t.same(fileNames(answers[2]), ["endpoint_reporter.proto", "google/protobuf/timestamp.proto"], `${version}: a message's file`);
    t.same(fileNames(answers[3]), ["health/v1/health.proto"], `${version}: a file by name`);
    for (const [i, what] of [[4, "symbol"], [5, "file"]] as const) {
      t.equal(answers[i].errorResponse?.errorCode, 5, `${version}: an unknown ${what} is answered NOT_FOUND, the stream goes on`);
      t.match(answers[i].errorResponse?.errorMessage, /not found/);
    }
    t.same(answers[6].allExtensionNumbersResponse, { baseTypeName: "scope.endpoint.v1.Connection", extensionNumber: [] }, `${version}: no extensions`);
    t.equal(answers[1].originalRequest.fileContainingSymbol, "scope.endpoint.v1.EndpointReporter.Report", `${version}: the request is echoed`);
  }
});

t.test("health Watch: the current status at once, SERVICE_UNKNOWN for an unknown name; at close NOT_SERVING, then the stream ends UNAVAILABLE", async (t) => {
  const { server } = await serve(t, { kind: "tcp", host: "127.0.0.1", port: 0 });
  const Health = makeClientConstructor(healthService, "Health");
  const health = new Health(server.address, credentials.createInsecure()) as Client & Record<string, Function>;
  t.teardown(() => health.close());
  const watch = (service: string) => {
    const statuses: string[] = [];
    const call = health.watch({ service });
    call.on("data", (reply: { status: string }) => statuses.push(reply.status));
    const ended = new Promise<{ code: number }>((resolve) => call.on("error", resolve));
    return { statuses, ended };
  };
  const whole = watch("");
  const unknown = watch("no.such.Service");
  const deadline = Date.now() + 5000;
  while ((whole.statuses.length === 0 || unknown.statuses.length === 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.same(whole.statuses, ["SERVING"]);
  t.same(unknown.statuses, ["SERVICE_UNKNOWN"], "the protocol's answer for a name the server does not know; the stream stays open");
  const closed = server.close();
  t.equal((await whole.ended).code, 14, "ended UNAVAILABLE by the shutdown");
  t.equal((await unknown.ended).code, 14);
  await closed;
  t.same(whole.statuses, ["SERVING", "NOT_SERVING"], "told NOT_SERVING before the end");
});

t.test("one server on a Unix socket and TCP at once", async (t) => {
  const { table, backend } = makeBackend();
  table.open(conn());
  const path = join(tempDir(t), "both.sock");
  const server = await startGrpcServer({ backend, hostId: "h", listen: [{ kind: "unix", path }, { kind: "tcp", host: "127.0.0.1", port: 0 }] });
  t.teardown(() => server.close());
  t.equal(server.addresses.length, 2);
  t.equal(server.addresses[0], `unix://${path}`);
  t.equal(server.addresses[1], `127.0.0.1:${server.port}`);
  for (const address of server.addresses) {
    const r = await unary<pb.EndpointReport>((cb) => grpcClient(t, address).report({ clientId: "" }, cb));
    t.equal(r.connections.length, 1, address);
  }
  await t.rejects(startGrpcServer({ backend, hostId: "h", listen: [] }), { code: "ERR_CONFIG" });
  // A bad second listener undoes the first.
  const other = join(tempDir(t), "undo.sock");
  await t.rejects(startGrpcServer({ backend, hostId: "h", listen: [{ kind: "unix", path: other }, { kind: "tcp", host: "127.0.0.1", port: server.port }] }), { code: "ERR_CONFIG" });
  t.throws(() => statSync(other), { code: "ENOENT" }, "the first listener's socket was removed");
});
