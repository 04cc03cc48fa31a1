/** Shared by the server, CLI and integration tests: the real table and backend, temp dirs, clients. */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials, type ServiceError } from "@grpc/grpc-js";
import { ConnectionTable } from "../../plugin/table/connection-table.ts";
import { createReportBackend } from "../../plugin/table/report-backend.ts";
import { type Connection, connectionKey } from "../../plugin/model/connection.ts";
import { emptyCounters, type TrackerStatus } from "../../plugin/model/status.ts";
import { EndpointReporterClient } from "../../plugin/generated/endpoint_reporter.ts";

interface Teardown {
  teardown(fn: () => unknown): void;
}

export const STATUS: TrackerStatus = {
  source: "ebpf",
  sinceMs: Date.UTC(2024, 0, 2, 3, 4, 5, 678),
  reason: "eBPF loaded (kernel 6.18, BTF present)",
  counters: { ...emptyCounters(), events: 42, lost: 1 },
};

export function makeBackend(maxConnections = 100_000) {
  const table = new ConnectionTable({ maxConnections });
  const backend = createReportBackend(table, () => STATUS);
  return { table, backend };
}

export function conn(overrides: Partial<Connection> = {}): Connection {
  return {
    localAddress: "10.0.0.1",
    localPort: 40000,
    remoteAddress: "10.0.0.2",
    remotePort: 80,
    netns: 4026531840,
    pid: 1234,
    comm: "curl",
    direction: "outgoing",
    closed: false,
    source: "ebpf",
    ...overrides,
  };
}

export function closeConn(table: ConnectionTable, c: Connection): void {
  table.close(connectionKey(c));
}

/** Short paths: Unix socket paths are limited to 107 bytes. */
export function tempDir(t: Teardown): string {
  const dir = mkdtempSync(join(tmpdir(), "er-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function grpcClient(t: Teardown, address: string): EndpointReporterClient {
  const client = new EndpointReporterClient(address, credentials.createInsecure());
  t.teardown(() => client.close());
  return client;
}

/** A gRPC message as it goes on the wire: uncompressed flag, big-endian length, the message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

export function unary<T>(start: (callback: (error: ServiceError | null, value: T) => void) => unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    start((error, value) => (error ? reject(error) : resolve(value)));
  });
}

/** Resolves once `check` holds, polling; rejects after `timeoutMs`. */
export async function eventually(check: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A throwaway self-signed certificate for localhost / 127.0.0.1. */
export function selfSigned(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", `/CN=${name}`,
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-addext", "basicConstraints=critical,CA:TRUE",
  ], { stdio: "ignore" });
  return { cert, key };
}

export interface HttpReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** GET over a Unix socket with the body kept as bytes (as a Go client reads it before decoding). */
export function httpGetBytes(socketPath: string, path: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

export function httpGet(socketPath: string, path: string, method = "GET"): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * GET that resolves only once the server closed the connection (the request is sent with
 * `Connection: close`), so that the server has finished with the response, as a poller that asks
 * again a second later would see it; `httpGet` resolves at the last byte, possibly before that.
 */
export function httpGetSettled(socketPath: string, path: string): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => res.socket.once("close", () => resolve({ status: res.statusCode!, headers: res.headers, body })));
    });
    req.on("error", reject);
    req.end();
  });
}
