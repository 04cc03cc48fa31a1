/**
 * Unix socket paths that are safe to take over: a leftover socket file is replaced only when it is
 * a socket and nothing answers on it; anything else at the path is refused, never deleted.
 * Shared by the gRPC server and the Scope plugin socket.
 */
import { chmod, lstat, mkdir, mkdtemp, rename, rm, stat, unlink } from "node:fs/promises";
import { connect } from "node:net";
import { basename, dirname, join } from "node:path";
import { PluginError } from "../errors.ts";

/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export type SocketProbe = "answers" | "refused" | "absent";

/** Whether a listener answers on the socket at `path`; a silent one (full backlog) counts as answering. */
export function probeSocket(path: string, timeoutMs = 500): Promise<SocketProbe> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const done = (result: SocketProbe) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done("answers"), timeoutMs);
    socket.once("connect", () => done("answers"));
    socket.once("error", (error: NodeJS.ErrnoException) => done(error.code === "ENOENT" ? "absent" : "refused"));
  });
}

export function checkSocketPathLength(path: string): void {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new PluginError("ERR_CONFIG", `socket path ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes, the Unix socket limit`);
  }
}

/**
 * Makes `path` free to bind: nothing there, or a stale socket (removed when `removeStale`).
 * Throws ERR_CONFIG when a live server answers there or when the path is not a socket.
 */
export async function claimSocketPath(path: string, removeStale: boolean): Promise<void> {
  checkSocketPathLength(path);
  let info;
  try {
    info = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new PluginError("ERR_CONFIG", `cannot inspect socket path ${path}: ${(error as Error).message}`, { cause: error });
  }
  if (!info.isSocket()) {
    throw new PluginError("ERR_CONFIG", `${path} exists and is not a socket; refusing to replace it`);
  }
  const probe = await probeSocket(path);
  if (probe === "answers") {
    throw new PluginError("ERR_CONFIG", `another server is already listening on ${path}`);
  }
  if (probe === "refused" && removeStale) await unlink(path).catch(ignoreMissing);
}

export async function ensureDirectory(path: string, mode: number, enforceMode: boolean): Promise<void> {
  try {
    await mkdir(path, { recursive: true, mode });
    if (enforceMode) await chmod(path, mode);
  } catch (error) {
    throw new PluginError("ERR_CONFIG", `cannot create directory ${path}: ${(error as Error).message}`, { cause: error });
  }
}

export interface BoundSocket {
  readonly path: string;
  /** Removes the socket file, unless something else has replaced it since. */
  remove(): Promise<void>;
}

/**
 * Binds through a private directory and renames the socket into place, so the socket is never
 * reachable before it has its final mode, and a stale socket is replaced atomically.
 */
export async function bindUnixSocket(path: string, mode: number, bind: (tempPath: string) => Promise<void>): Promise<BoundSocket> {
  await ensureDirectory(dirname(path), 0o755, false);
  await claimSocketPath(path, false);
  const privateDir = await mkdtemp(join(dirname(path), `.${basename(path).slice(0, 8)}-`));
  const tempPath = join(privateDir, "s");
  try {
    checkSocketPathLength(tempPath);
    await bind(tempPath);
    await chmod(tempPath, mode);
    await rename(tempPath, path);
  } finally {
    await rm(privateDir, { recursive: true, force: true });
  }
  const { ino, dev } = await stat(path);
  return {
    path,
    async remove() {
      const now = await stat(path).catch(() => undefined);
      if (now !== undefined && now.ino === ino && now.dev === dev) await unlink(path).catch(ignoreMissing);
    },
  };
}

function ignoreMissing(error: NodeJS.ErrnoException): void {
  if (error.code !== "ENOENT") throw error;
}
