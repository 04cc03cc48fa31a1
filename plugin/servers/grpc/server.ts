/**
 * The gRPC server: EndpointReporter, the standard health service and server reflection, on a
 * Unix socket (default) or TCP (plaintext on loopback only, TLS otherwise), with explicit limits.
 */
import { Server, ServerCredentials, status as GrpcStatus } from "@grpc/grpc-js";
import type { ReportBackend } from "../../model/backend.ts";
import type { Logger } from "../../log.ts";
import { PluginError } from "../../errors.ts";
import { DEFAULT_GRPC_SOCKET, type GrpcListen, tcpCredentials, tcpTarget } from "./listen-config.ts";
import { HealthServer } from "./health.ts";
import { addReflection } from "./reflection.ts";
import { deliveryInterceptor } from "./report-delivery.ts";
import { FastEndpointReporterService } from "./report-encoding.ts";
import { createEndpointReporterService } from "./service.ts";
import { bindUnixSocket, type BoundSocket } from "../unix-socket.ts";
import type { WatchStream } from "./watch.ts";

export const SERVICE_NAME = "scope.endpoint.v1.EndpointReporter";

export interface GrpcLimits {
  /** Largest request accepted; requests are tiny, so anything big is an attack or a bug. */
  maxReceiveMessageBytes: number;
  /** Largest response; a Report of every open connection is the big one. */
  maxSendMessageBytes: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection. */
  maxConcurrentStreams: number;
  /** Changes a Watch reader may fall behind by before it is cut off with RESOURCE_EXHAUSTED. */
  maxWatchQueue: number;
  /**
   * Grace for in-flight calls on close before they are cancelled (streams that never end on their
   * own, such as a standard health Watch, are cancelled then). Well inside the process's 2 s to exit.
   */
  shutdownGraceMs: number;
  /** Ping interval and answer timeout: peers that stop answering (dead, or hostile) are dropped. */
  keepaliveTimeMs: number;
  keepaliveTimeoutMs: number;
}

export const DEFAULT_GRPC_LIMITS: GrpcLimits = {
  maxReceiveMessageBytes: 64 * 1024,
  maxSendMessageBytes: 64 * 1024 * 1024,
  maxConcurrentStreams: 100,
  maxWatchQueue: 10_000,
  shutdownGraceMs: 1_000,
  keepaliveTimeMs: 60_000,
  keepaliveTimeoutMs: 20_000,
};

export interface GrpcServerOptions {
  backend: ReportBackend;
  /** Scope's host id ($SCOPE_HOSTNAME or the hostname), echoed in every EndpointReport. */
  hostId: string;
  /** One server on each; default the Unix socket /var/run/scope/endpoint-reporter.sock, mode 0600. */
  listen?: GrpcListen | readonly GrpcListen[];
  limits?: Partial<GrpcLimits>;
  log?: Logger;
}

export interface GrpcServerHandle {
  /** The first listener's address: "unix:///path", or "host:port" with the port actually bound. */
  readonly address: string;
  /** The first TCP port bound (0 when there is no TCP listener). */
  readonly port: number;
  /** Every listener's address, in the order given. */
  readonly addresses: readonly string[];
  readonly health: HealthServer;
  /** Live Watch streams. */
  watcherCount(): number;
  close(): Promise<void>;
}

export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServerHandle> {
  const limits = { ...DEFAULT_GRPC_LIMITS, ...options.limits };
  validateLimits(limits);
  const listens: readonly GrpcListen[] = options.listen === undefined
    ? [{ kind: "unix", path: DEFAULT_GRPC_SOCKET }]
    : Array.isArray(options.listen) ? options.listen : [options.listen as GrpcListen];
  if (listens.length === 0) throw new PluginError("ERR_CONFIG", "no gRPC listener configured");
  // Credentials first: a bad config must fail before anything is bound.
  const credentials = listens.map((l) => (l.kind === "tcp" ? tcpCredentials(l) : ServerCredentials.createInsecure()));

  const server = new Server({
    "grpc.max_receive_message_length": limits.maxReceiveMessageBytes,
    "grpc.max_send_message_length": limits.maxSendMessageBytes,
    "grpc.max_concurrent_streams": limits.maxConcurrentStreams,
    "grpc.keepalive_time_ms": limits.keepaliveTimeMs,
    "grpc.keepalive_timeout_ms": limits.keepaliveTimeoutMs,
    interceptors: [deliveryInterceptor],
  });
  const watches = new Set<WatchStream>();
  server.addService(
    FastEndpointReporterService,
    createEndpointReporterService({
      backend: options.backend,
      hostId: options.hostId,
      maxWatchQueue: limits.maxWatchQueue,
      watches,
      log: options.log,
    }),
  );
  const health = new HealthServer({ "": "SERVING", [SERVICE_NAME]: "SERVING" });
  health.addToServer(server);
  addReflection(server);

  const addresses: string[] = [];
  const sockets: BoundSocket[] = [];
  let port = 0;
  for (const [i, listen] of listens.entries()) {
    try {
      if (listen.kind === "unix") {
        sockets.push(await bindUnixSocket(listen.path, listen.mode ?? 0o600, (tempPath) => bind(server, `unix://${tempPath}`, credentials[i]).then(() => undefined)));
        addresses.push(`unix://${listen.path}`);
      } else {
        const bound = await bind(server, tcpTarget(listen.host, listen.port), credentials[i]);
        if (port === 0) port = bound;
        addresses.push(tcpTarget(listen.host, bound));
      }
    } catch (error) {
      server.forceShutdown();
      await Promise.all(sockets.map((s) => s.remove()));
      if (error instanceof PluginError) throw error;
      throw new PluginError("ERR_CONFIG", `cannot listen for gRPC on ${describe(listen)}: ${(error as Error).message}`, { cause: error });
    }
  }
  options.log?.info("gRPC server listening", { addresses });

  let closing: Promise<void> | undefined;
  return {
    address: addresses[0],
    port,
    addresses,
    health,
    watcherCount: () => watches.size,
    close() {
      closing ??= shutdown(server, health, watches, sockets, limits.shutdownGraceMs);
      return closing;
    },
  };
}

function bind(server: Server, target: string, credentials: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(target, credentials, (error, port) => (error ? reject(error) : resolve(port)));
  });
}

async function shutdown(server: Server, health: HealthServer, watches: Set<WatchStream>, sockets: readonly BoundSocket[], graceMs: number): Promise<void> {
  health.setStatus("", "NOT_SERVING");
  health.setStatus(SERVICE_NAME, "NOT_SERVING");
  health.endWatches("server shutting down");
  for (const watch of [...watches]) watch.end(GrpcStatus.UNAVAILABLE, "server shutting down");
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      // Stuck readers never finish on their own.
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  await Promise.all(sockets.map((s) => s.remove()));
}

function validateLimits(limits: GrpcLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new PluginError("ERR_CONFIG", `gRPC limit ${name} must be a positive integer, got ${value}`);
    }
  }
}

function describe(listen: GrpcListen): string {
  return listen.kind === "unix" ? `unix://${listen.path}` : tcpTarget(listen.host, listen.port);
}
