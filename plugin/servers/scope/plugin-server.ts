/**
 * The Scope probe plugin: HTTP/1.1 on <root>/<id>/<id>.sock, which the probe finds by scanning
 * its plugins root. The socket's directory is mode 0700 and the socket is removed on close.
 */
import { createServer, type Server } from "node:http";
import { chmod, rmdir, stat, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Socket } from "node:net";
import type { ReportBackend } from "../../model/backend.ts";
import type { Logger } from "../../log.ts";
import { PluginError } from "../../errors.ts";
import { checkSocketPathLength, claimSocketPath, ensureDirectory } from "../unix-socket.ts";
import { createScopeRequestHandler } from "./http-handler.ts";
import { type Network, parseNetwork } from "./node-id.ts";
import { ReportCache, type ReportCacheOptions } from "./report-cache.ts";

export const DEFAULT_PLUGINS_ROOT = "/var/run/scope/plugins";
export const DEFAULT_PLUGIN_ID = "endpoint-reporter";
/** probe/plugins/registry.go validPluginName. */
export const PLUGIN_ID_PATTERN = /^[A-Za-z0-9]+([-][A-Za-z0-9]+)*$/;

export interface ScopePluginOptions {
  backend: ReportBackend;
  /** Scope's host id; default $SCOPE_HOSTNAME, else the hostname. */
  hostId?: string;
  /** Default /var/run/scope/plugins (the probe's --probe.plugins.root). */
  root?: string;
  /** Default "endpoint-reporter". */
  id?: string;
  label?: string;
  description?: string;
  /** CIDRs the probe treats as local (its docker bridge outside Kubernetes): host-scoped ids. */
  localNetworks?: readonly string[];
  cache?: Partial<ReportCacheOptions>;
  log?: Logger;
}

export interface ScopePluginHandle {
  readonly socketPath: string;
  readonly id: string;
  readonly hostId: string;
  readonly cache: ReportCache;
  close(): Promise<void>;
}

export function defaultHostId(): string {
  return process.env.SCOPE_HOSTNAME || hostname();
}

export async function startScopePlugin(options: ScopePluginOptions): Promise<ScopePluginHandle> {
  const id = options.id ?? DEFAULT_PLUGIN_ID;
  if (!PLUGIN_ID_PATTERN.test(id)) {
    throw new PluginError("ERR_CONFIG", `plugin id ${JSON.stringify(id)} is not accepted by Scope (must match ${PLUGIN_ID_PATTERN.source})`);
  }
  const root = options.root ?? DEFAULT_PLUGINS_ROOT;
  const dir = join(root, id);
  const socketPath = join(dir, `${id}.sock`);
  checkSocketPathLength(socketPath);
  const localNetworks = (options.localNetworks ?? []).map((cidr): Network => {
    const network = parseNetwork(cidr);
    if (network === undefined) throw new PluginError("ERR_CONFIG", `local network ${JSON.stringify(cidr)} is not a CIDR`);
    return network;
  });
  const hostId = options.hostId ?? defaultHostId();
  // Node ids are written into the JSON unescaped, and ";" separates their parts.
  if (!/^[^;"\\\u0000-\u001f\u007f]+$/.test(hostId)) {
    throw new PluginError("ERR_CONFIG", `host id ${JSON.stringify(hostId)} is empty or contains ";", a quote, a backslash or a control character`);
  }

  const cache = new ReportCache(
    options.backend,
    { id, label: options.label ?? "Endpoint Reporter", description: options.description ?? "TCP connections tracked with eBPF, /proc as fallback" },
    { hostId, localNetworks },
    options.cache,
    options.log,
  );

  try {
    // The first body is ready before the socket appears.
    await cache.start();
    await ensureDirectory(root, 0o755, false);
    await ensureDirectory(dir, 0o700, true);
    await claimSocketPath(socketPath, true);
  } catch (error) {
    cache.stop();
    throw error;
  }

  const server = createServer({
    maxHeaderSize: 16 * 1024,
    requestTimeout: 5_000,
    headersTimeout: 2_000,
    keepAliveTimeout: 5_000,
    // How often the two timeouts above are enforced (Node's default is 30 s).
    connectionsCheckingInterval: 1_000,
  }, createScopeRequestHandler(cache, options.log));
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
    options.log?.debug("malformed request on the Scope plugin socket", { code: error.code });
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const status = error.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  server.on("error", (error) => options.log?.error("scope plugin server error", { error }));

  let socketIdentity: { ino: number; dev: number };
  try {
    await listen(server, socketPath);
    await chmod(socketPath, 0o600);
    socketIdentity = await stat(socketPath);
  } catch (error) {
    server.close();
    cache.stop();
    throw new PluginError("ERR_CONFIG", `cannot listen on ${socketPath}: ${(error as Error).message}`, { cause: error });
  }
  options.log?.info("Scope plugin listening", { socket: socketPath, hostId });

  let closing: Promise<void> | undefined;
  return {
    socketPath,
    id,
    hostId,
    cache,
    close() {
      closing ??= (async () => {
        cache.stop();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
        // Node unlinks the socket on close; not every runtime does. Never remove a successor's.
        const now = await stat(socketPath).catch(() => undefined);
        if (now !== undefined && now.ino === socketIdentity.ino && now.dev === socketIdentity.dev) await unlink(socketPath).catch(() => {});
        await rmdir(dir).catch(() => {});
      })();
      return closing;
    },
  };
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
