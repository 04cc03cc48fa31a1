/** A ready EndpointReporter client for the CLI, or a clear reason why the server is not reachable. */
import { readFileSync, statSync } from "node:fs";
import { type ChannelCredentials, credentials } from "@grpc/grpc-js";
import { EndpointReporterClient } from "../client/endpoint-reporter-client.ts";
import { isLoopbackHost } from "../servers/grpc/listen-config.ts";
import type { CliArgs } from "./args.ts";

export class UnreachableError extends Error {}

export function targetOf(args: CliArgs): string {
  return args.address ?? `unix://${args.socket}`;
}

function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(":"));
}

function channelCredentials(args: CliArgs): { creds: ChannelCredentials; serverName?: string } {
  if (args.address === undefined) return { creds: credentials.createInsecure() };
  // The server refuses plaintext off loopback, so TLS there even without explicit options.
  if (args.tls === undefined && isLoopbackHost(hostOf(args.address))) return { creds: credentials.createInsecure() };
  const read = (path: string | undefined, what: string) => {
    if (path === undefined) return null;
    try {
      return readFileSync(path);
    } catch (error) {
      throw new UnreachableError(`cannot read ${what} ${path}: ${(error as Error).message}`);
    }
  };
  const ca = read(args.tls?.caFile, "CA file");
  const cert = read(args.tls?.certFile, "client certificate");
  const key = read(args.tls?.keyFile, "client key");
  return { creds: credentials.createSsl(ca, key, cert), serverName: args.tls?.serverName };
}

/** The socket file's absence or type says more than a connect timeout does. */
function checkSocketFile(path: string): void {
  let info;
  try {
    info = statSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const hint = code === "ENOENT" ? " (is the endpoint reporter running? see --socket)" : "";
    throw new UnreachableError(`cannot reach the endpoint reporter: ${path}: ${code ?? (error as Error).message}${hint}`);
  }
  if (!info.isSocket()) throw new UnreachableError(`cannot reach the endpoint reporter: ${path} is not a socket`);
}

export async function connectClient(args: CliArgs): Promise<EndpointReporterClient> {
  if (args.address === undefined) checkSocketFile(args.socket);
  const { creds, serverName } = channelCredentials(args);
  const client = new EndpointReporterClient(targetOf(args), creds, {
    ...(serverName === undefined ? {} : { "grpc.ssl_target_name_override": serverName }),
    // The CLI talks once and leaves: no reconnect backoff dance.
    "grpc.max_reconnect_backoff_ms": 1000,
    // A Report of 100k connections is ~6 MiB; grpc-js clients refuse over 4 MiB by default.
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    // With grpc-js's 64 KiB window a big Report waits for a window update every 64 KiB;
    // at 100k connections 16 MiB took p99 from 571 to 304 ms (scripts/bench/report-latency.ts).
    "grpc-node.flow_control_window": 16 * 1024 * 1024,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      client.waitForReady(Date.now() + args.timeoutMs, (error) => (error ? reject(error) : resolve()));
    });
  } catch (error) {
    client.close();
    throw new UnreachableError(`cannot reach the endpoint reporter at ${targetOf(args)}: ${(error as Error).message}`);
  }
  return client;
}
