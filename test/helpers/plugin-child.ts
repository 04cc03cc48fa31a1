/**
 * The real plugin as a child process (plugin/main.ts under Node or Deno), for the integration tests,
 * the Deno soak and the latency benchmark: started in a temp dir of its own, ready once it logs
 * "ready", stopped by a signal with the exit code, the signal and the time it took.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { credentials, type ChannelOptions } from "@grpc/grpc-js";
import { withPluginTunables } from "../../plugin/runtime/allocator-policy.ts";
import { pluginV8Flags } from "../../plugin/runtime/heap-policy.ts";
import { EndpointReporterClient } from "../../plugin/generated/endpoint_reporter.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const DENO_BIN = join(ROOT, "node_modules/deno/deno");
/**
 * Deno needs --allow-all: Deno >= 1.43 refuses reads of /proc and /sys (and /dev, /etc) unless
 * every permission is granted (CVE-2024-34346), and the plugin reads /proc/sys/kernel/osrelease,
 * /sys/kernel/btf/vmlinux and every /proc/PID/{fd,net/tcp*}; loading the Node-API addon
 * (--allow-ffi) escapes the sandbox anyway. See test/integration/deno.test.ts.
 */
export const DENO_PERMISSIONS: readonly string[] = ["--allow-all"];

/** "start-script": the README's start command, scripts/start.sh (setup, then the plugin under Node). */
export type Runtime = "node" | "deno" | "start-script";

/**
 * The plugin's command line. `v8Flags` (the heap policy, as scripts/start.sh passes it by default)
 * go to node itself, or to Deno's --v8-flags.
 */
export function pluginCommand(
  runtime: Runtime,
  denoArgs: readonly string[] = DENO_PERMISSIONS,
  nodeArgs: readonly string[] = [],
  v8Flags: readonly string[] = pluginV8Flags(),
): { command: string; args: string[] } {
  switch (runtime) {
    case "node": return { command: process.execPath, args: [...v8Flags, ...nodeArgs, "--import", "tsx", "plugin/main.ts"] };
    case "deno": return { command: DENO_BIN, args: ["run", ...(v8Flags.length > 0 ? [`--v8-flags=${v8Flags.join(",")}`] : []), ...denoArgs, "plugin/main.ts"] };
    case "start-script": return { command: "bash", args: ["scripts/start.sh"] };
  }
}

export interface StartOptions {
  runtime: Runtime;
  /** Flags after the defaults (--grpc-socket, --plugins-root, --log-level info, --host-id). */
  args?: readonly string[];
  /** Deno only: what goes between `run` and the script (permissions, --cached-only...). */
  denoArgs?: readonly string[];
  /** A command that runs the plugin's command line, e.g. ["setpriv", "--bounding-set=-bpf", "--"]. */
  wrapper?: readonly string[];
  /** Node only: flags for node itself (e.g. --trace-gc). */
  nodeArgs?: readonly string[];
  /** V8 flags for node or Deno; the plugin's own (plugin/runtime/v8-flags, as scripts/start.sh) by default. */
  v8Flags?: readonly string[];
  /** Called with each stdout line (the plugin logs to stderr; V8 traces go to stdout). */
  onStdout?: (line: string) => void;
  env?: Record<string, string>;
  /** Where the sockets go; a fresh temp dir (removed by `cleanup()`) by default. */
  dir?: string;
  readyTimeoutMs?: number;
  /** The log message that counts as started ("ready" by default; "starting" to catch start-up itself). */
  readyMessage?: string;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface PluginProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly dir: string;
  readonly grpcSocket: string;
  readonly grpcTarget: string;
  readonly scopeSocket: string;
  /** The "ready" log record. */
  readonly ready: Record<string, unknown>;
  /** Every stderr line so far (the last 5,000). */
  readonly logs: string[];
  readonly exited: Promise<ExitInfo>;
  alive(): boolean;
  client(options?: ChannelOptions): EndpointReporterClient;
  /** VmRSS of the plugin process in KiB (from /proc/PID/status). */
  rssKiB(): number;
  /** Sends `signal`, waits up to `timeoutMs`; SIGKILLs after that. `elapsedMs` is signal to exit. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitInfo & { elapsedMs: number; timedOut: boolean }>;
  /** SIGKILL if still running, then remove the temp dir when it is ours. */
  cleanup(): Promise<void>;
}

export class PluginStartError extends Error {}

export async function startPlugin(options: StartOptions): Promise<PluginProcess> {
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "erp-"));
  const grpcSocket = join(dir, "g.sock");
  const pluginsRoot = join(dir, "plugins");
  const scopeSocket = join(pluginsRoot, "endpoint-reporter", "endpoint-reporter.sock");
  const plugin = pluginCommand(options.runtime, options.denoArgs, options.nodeArgs, options.v8Flags);
  const [command, ...args] = [...(options.wrapper ?? []), plugin.command, ...plugin.args];
  const child = spawn(command, [
    ...args,
    "--grpc-socket", grpcSocket,
    "--plugins-root", pluginsRoot,
    "--log-level", "info",
    "--host-id", "test-host",
    ...(options.args ?? []),
  ], {
    cwd: ROOT,
    // The allocator policy (and above, the heap policy) as scripts/start.sh sets it (which sets it
    // itself): what the tests and benchmarks measure is what users run.
    env: {
      ...process.env,
      NO_COLOR: "1",
      ...(options.runtime === "start-script" ? {} : { GLIBC_TUNABLES: withPluginTunables(process.env.GLIBC_TUNABLES) }),
      ...options.env,
    },
    stdio: ["ignore", options.onStdout === undefined ? "ignore" : "pipe", "pipe"],
  });
  if (options.onStdout !== undefined) createInterface({ input: child.stdout! }).on("line", options.onStdout);
  const logs: string[] = [];
  const exited = new Promise<ExitInfo>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  let onReady: ((record: Record<string, unknown>) => void) | undefined;
  createInterface({ input: child.stderr! }).on("line", (line) => {
    logs.push(line);
    if (logs.length > 5000) logs.splice(0, logs.length - 5000);
    if (onReady !== undefined && line.includes(`"msg":${JSON.stringify(options.readyMessage ?? "ready")}`)) {
      try {
        onReady(JSON.parse(line));
      } catch { /* not our JSON */ }
    }
  });
  const cleanup = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };

  const timeoutMs = options.readyTimeoutMs ?? 60_000;
  let ready: Record<string, unknown>;
  try {
    ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new PluginStartError(`plugin (${options.runtime}) not ready after ${timeoutMs} ms:\n${logs.slice(-20).join("\n")}`)), timeoutMs);
      onReady = (record) => {
        clearTimeout(timer);
        resolve(record);
      };
      void exited.then((exit) => {
        clearTimeout(timer);
        reject(new PluginStartError(`plugin (${options.runtime}) exited before ready (${JSON.stringify(exit)}):\n${logs.slice(-20).join("\n")}`));
      });
    });
  } catch (error) {
    await cleanup();
    throw error;
  }

  return {
    child,
    pid: child.pid!,
    dir,
    grpcSocket,
    grpcTarget: `unix://${grpcSocket}`,
    scopeSocket,
    ready,
    logs,
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    client: (channelOptions) => new EndpointReporterClient(`unix://${grpcSocket}`, credentials.createInsecure(), channelOptions),
    rssKiB: () => {
      const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
      if (m === null) throw new Error(`no VmRSS for ${child.pid}`);
      return Number(m[1]);
    },
    async stop(signal = "SIGTERM", stopTimeoutMs = 5000) {
      const sentAt = performance.now();
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill("SIGKILL");
      }, stopTimeoutMs);
      const exit = await exited;
      clearTimeout(timer);
      return { ...exit, elapsedMs: performance.now() - sentAt, timedOut };
    },
    cleanup,
  };
}

/** Both socket files the plugin serves, with whether each exists now. */
export function socketsPresent(p: Pick<PluginProcess, "grpcSocket" | "scopeSocket">): { grpc: boolean; scope: boolean } {
  return { grpc: existsSync(p.grpcSocket), scope: existsSync(p.scopeSocket) };
}
