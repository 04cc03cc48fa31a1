import t from "tap";
import { readFileSync } from "node:fs";
import { credentials, Metadata, status as GrpcStatus } from "@grpc/grpc-js";
import { startGrpcServer } from "../../plugin/servers/grpc/server.ts";
import { grpcListens, isLoopbackHost, parseHostPort, tcpCredentials } from "../../plugin/servers/grpc/listen-config.ts";
import { EndpointReporterClient, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { makeBackend, selfSigned, tempDir, unary } from "../helpers/server-harness.ts";

t.test("plaintext off loopback is refused with a config error", async (t) => {
  const { backend } = makeBackend();
  for (const host of ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "example.com", "[2001:db8::1]"]) {
    await t.rejects(
      startGrpcServer({ backend, hostId: "h", listen: { kind: "tcp", host, port: 0 } }),
      { code: "ERR_CONFIG", message: /refusing plaintext gRPC on non-loopback address/ },
      host,
    );
  }
  for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"]) {
    t.ok(isLoopbackHost(host), `${host} is loopback`);
    t.doesNotThrow(() => tcpCredentials({ kind: "tcp", host, port: 1 }), `${host} may be plaintext`);
  }
  t.throws(() => tcpCredentials({ kind: "tcp", host: "0.0.0.0", port: 1, tls: { certFile: "/nonexistent.crt", keyFile: "/nonexistent.key" } }), {
    code: "ERR_CONFIG",
    message: /cannot read TLS certificate \/nonexistent.crt/,
  });
  t.throws(() => tcpCredentials({ kind: "tcp", host: "127.0.0.1", port: 70000 }), { code: "ERR_CONFIG" });
});

t.test("TLS on a non-loopback listener works with a TLS client; plaintext clients fail", async (t) => {
  const dir = tempDir(t);
  const server = selfSigned(dir, "server");
  const { backend } = makeBackend();
  const handle = await startGrpcServer({ backend, hostId: "h", listen: { kind: "tcp", host: "0.0.0.0", port: 0, tls: { certFile: server.cert, keyFile: server.key } } });
  t.teardown(() => handle.close());
  t.ok(handle.port > 0);

  const tls = new EndpointReporterClient(`127.0.0.1:${handle.port}`, credentials.createSsl(readFileSync(server.cert)));
  t.teardown(() => tls.close());
  const status = await unary<TrackerStatus>((cb) => tls.getStatus({}, cb));
  t.equal(status.reason.length > 0, true, "a TLS client gets answers");

  const plain = new EndpointReporterClient(`127.0.0.1:${handle.port}`, credentials.createInsecure());
  t.teardown(() => plain.close());
  await t.rejects(unary((cb) => plain.getStatus({}, new Metadata(), { deadline: Date.now() + 2000 }, cb)), { code: GrpcStatus.UNAVAILABLE }, "plaintext client cannot talk to the TLS listener");
});

t.test("mutual TLS: a CA file makes client certificates mandatory", async (t) => {
  const dir = tempDir(t);
  const server = selfSigned(dir, "server");
  const client = selfSigned(dir, "client");
  const { backend } = makeBackend();
  const handle = await startGrpcServer({
    backend,
    hostId: "h",
    listen: { kind: "tcp", host: "127.0.0.1", port: 0, tls: { certFile: server.cert, keyFile: server.key, caFile: client.cert } },
  });
  t.teardown(() => handle.close());
  const ca = readFileSync(server.cert);

  const withCert = new EndpointReporterClient(handle.address, credentials.createSsl(ca, readFileSync(client.key), readFileSync(client.cert)));
  t.teardown(() => withCert.close());
  await unary((cb) => withCert.getStatus({}, cb));
  t.pass("a client with a certificate from the CA is served");

  const withoutCert = new EndpointReporterClient(handle.address, credentials.createSsl(ca));
  t.teardown(() => withoutCert.close());
  await t.rejects(unary((cb) => withoutCert.getStatus({}, new Metadata(), { deadline: Date.now() + 2000 }, cb)), { code: GrpcStatus.UNAVAILABLE }, "a client without one is not");

  const stranger = selfSigned(dir, "stranger");
  const wrongCert = new EndpointReporterClient(handle.address, credentials.createSsl(ca, readFileSync(stranger.key), readFileSync(stranger.cert)));
  t.teardown(() => wrongCert.close());
  await t.rejects(unary((cb) => wrongCert.getStatus({}, new Metadata(), { deadline: Date.now() + 2000 }, cb)), { code: GrpcStatus.UNAVAILABLE }, "nor one with a certificate from elsewhere");
});

t.test("listeners from command-line settings", async (t) => {
  const none = { grpcSocket: "", grpcListen: "", tlsCert: "", tlsKey: "", tlsCa: "" };
  t.same(grpcListens({ ...none, grpcSocket: "/run/x.sock" }), [{ kind: "unix", path: "/run/x.sock" }]);
  t.same(grpcListens({ ...none, grpcListen: "127.0.0.1:7000" }), [{ kind: "tcp", host: "127.0.0.1", port: 7000, tls: undefined }]);
  t.same(grpcListens({ ...none, grpcListen: "[::1]:7000" }), [{ kind: "tcp", host: "::1", port: 7000, tls: undefined }]);
  t.same(grpcListens({ ...none, grpcListen: ":7000" }), [{ kind: "tcp", host: "127.0.0.1", port: 7000, tls: undefined }], "no host: loopback");
  t.same(grpcListens({ grpcSocket: "/s", grpcListen: "0.0.0.0:7000", tlsCert: "c", tlsKey: "k", tlsCa: "a" }), [
    { kind: "unix", path: "/s" },
    { kind: "tcp", host: "0.0.0.0", port: 7000, tls: { certFile: "c", keyFile: "k", caFile: "a" } },
  ]);
  t.throws(() => grpcListens({ ...none, tlsCert: "c", tlsKey: "k" }), { code: "ERR_CONFIG", message: /--grpc-listen, which is not set/ });
  t.throws(() => grpcListens({ ...none, grpcListen: "0.0.0.0:1", tlsCert: "c" }), { code: "ERR_CONFIG", message: /both --tls-cert and --tls-key/ });
  for (const bad of ["7000", "host", "host:", "host:99999", "[::1]", "a:b:1"]) {
    t.throws(() => parseHostPort(bad), { code: "ERR_CONFIG" }, bad);
  }
});
