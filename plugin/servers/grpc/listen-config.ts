/**
 * Where the gRPC server listens and with what credentials. A Unix socket by default; TCP only when
 * asked, and then in plaintext only on a loopback address: anything reachable from the network
 * must use TLS, because the table names every process and peer on the host.
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { ServerCredentials } from "@grpc/grpc-js";
import { PluginError } from "../../errors.ts";

export const DEFAULT_GRPC_SOCKET = "/var/run/scope/endpoint-reporter.sock";

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** When set, clients must present a certificate signed by this CA (mutual TLS). */
  caFile?: string;
}

export type GrpcListen =
  | { kind: "unix"; path: string; /** Socket file mode; default 0600. */ mode?: number }
  | { kind: "tcp"; host: string; port: number; tls?: TlsFiles };

export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (bare === "localhost") return true;
  const family = isIP(bare);
  if (family === 4) return bare.startsWith("127.");
  if (family === 6) {
    const lower = bare.toLowerCase();
    if (lower === "::1" || lower === "0:0:0:0:0:0:0:1") return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
    return mapped !== null && mapped[1].startsWith("127.");
  }
  return false;
}

/** Validates a TCP listen config and loads its credentials; throws ERR_CONFIG with the reason. */
export function tcpCredentials(listen: Extract<GrpcListen, { kind: "tcp" }>): ServerCredentials {
  if (!Number.isInteger(listen.port) || listen.port < 0 || listen.port > 65535) {
    throw new PluginError("ERR_CONFIG", `gRPC port ${listen.port} is not a TCP port (0..65535)`);
  }
  if (listen.host === "") throw new PluginError("ERR_CONFIG", "gRPC TCP host is empty");
  if (listen.tls === undefined) {
    if (!isLoopbackHost(listen.host)) {
      throw new PluginError(
        "ERR_CONFIG",
        `refusing plaintext gRPC on non-loopback address ${listen.host}: give a TLS certificate and key, or listen on 127.0.0.1, ::1 or a Unix socket`,
      );
    }
    return ServerCredentials.createInsecure();
  }
  const cert = readTlsFile(listen.tls.certFile, "certificate");
  const key = readTlsFile(listen.tls.keyFile, "private key");
  const ca = listen.tls.caFile === undefined ? null : readTlsFile(listen.tls.caFile, "CA");
  try {
    return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], ca !== null);
  } catch (error) {
    throw new PluginError("ERR_CONFIG", `invalid TLS material: ${(error as Error).message}`, { cause: error });
  }
}

export function tcpTarget(host: string, port: number): string {
  const bare = host.startsWith("[") ? host.slice(1, -1) : host;
  return isIP(bare) === 6 ? `[${bare}]:${port}` : `${bare}:${port}`;
}

function readTlsFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new PluginError("ERR_CONFIG", `cannot read TLS ${what} ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** "host:port", "[v6]:port" or ":port" (loopback) to host and port; throws ERR_CONFIG. */
export function parseHostPort(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || port > 65535) throw new PluginError("ERR_CONFIG", `gRPC listen address ${JSON.stringify(text)} is not host:port`);
  return { host: match[1] ?? (match[2] || "127.0.0.1"), port };
}

export interface GrpcListenSettings {
  /** Unix socket path; empty: none. */
  grpcSocket: string;
  /** TCP host:port; empty: none. */
  grpcListen: string;
  tlsCert: string;
  tlsKey: string;
  tlsCa: string;
}

/** The listeners the command-line settings ask for, validated as a whole. */
export function grpcListens(settings: GrpcListenSettings): GrpcListen[] {
  const listens: GrpcListen[] = [];
  if (settings.grpcSocket !== "") listens.push({ kind: "unix", path: settings.grpcSocket });
  const anyTls = settings.tlsCert !== "" || settings.tlsKey !== "" || settings.tlsCa !== "";
  if (settings.grpcListen === "") {
    if (anyTls) throw new PluginError("ERR_CONFIG", "--tls-cert, --tls-key and --tls-ca apply to --grpc-listen, which is not set");
    return listens;
  }
  if (anyTls && (settings.tlsCert === "" || settings.tlsKey === "")) {
    throw new PluginError("ERR_CONFIG", "TLS needs both --tls-cert and --tls-key");
  }
  const { host, port } = parseHostPort(settings.grpcListen);
  listens.push({
    kind: "tcp",
    host,
    port,
    tls: anyTls ? { certFile: settings.tlsCert, keyFile: settings.tlsKey, ...(settings.tlsCa === "" ? {} : { caFile: settings.tlsCa }) } : undefined,
  });
  return listens;
}
