/**
 * The plugin process: the tracker stack, then its servers. SIGTERM/SIGINT stop accepting, finish
 * what is in flight, detach BPF, remove the sockets and exit 0 within 2 s.
 */
import { allocatorPolicy } from "./runtime/allocator-policy.ts";
import { parseConfig, usage } from "./config.ts";
import { describeError, errorCode } from "./errors.ts";
import { useArtifactsDir } from "./ebpf/native-addon.ts";
import { heapPolicy, processCommandLine } from "./runtime/heap-policy.ts";
import { createLogger } from "./log.ts";
import { startTrackerStack, type TrackerStack } from "./plugin.ts";
import { grpcListens } from "./servers/grpc/listen-config.ts";
import { startGrpcServer } from "./servers/grpc/server.ts";
import { startScopePlugin } from "./servers/scope/plugin-server.ts";

/** Exit 0 comes well before this: gRPC's grace (DEFAULT_GRPC_LIMITS.shutdownGraceMs) is shorter. */
const SHUTDOWN_DEADLINE_MS = 1900;

async function main(): Promise<void> {
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    process.stdout.write(usage());
    return;
  }
  let config;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n`);
    process.exit(64);
  }
  const log = createLogger(config.logLevel, { service: "endpoint-reporter" });
  if (config.artifactsDir !== "") useArtifactsDir(config.artifactsDir);
  const allocator = allocatorPolicy();
  if (!allocator.keepsFreedMemory) {
    log.warn("glibc hands freed memory back at once: every Report faults its buffers in afresh; start the plugin with scripts/start.sh, or set GLIBC_TUNABLES as it does (plugin/runtime/glibc-tunables)", { glibcTunables: allocator.glibcTunables });
  }
  const heap = heapPolicy(processCommandLine());
  if (heap.oldSpaceFloorMiB === undefined) {
    log.warn("V8 collects a small heap in full every few Reports: start the plugin with scripts/start.sh, or give the runtime the V8 flags it does (plugin/runtime/v8-flags)");
  }
  const listens = grpcListens(config);

  // Signals are handled from here on, before anything is awaited: a SIGTERM during start-up (a /proc
  // seed of 100k connections takes seconds) stops what has started and exits 0 like any other.
  const stopSignal = new AbortController();
  const closers: Array<() => Promise<void>> = [];
  let stack: TrackerStack | undefined;
  let startup: Promise<void> = Promise.resolve();
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal });
    setTimeout(() => {
      log.error("shutdown deadline passed, exiting anyway", { deadlineMs: SHUTDOWN_DEADLINE_MS });
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    stopSignal.abort();
    await startup.catch(() => undefined);
    await Promise.allSettled(closers.map((close) => close()));
    await stack?.stop();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  startup = (async () => {
    log.info("starting", { source: config.source });
    stack = await startTrackerStack(config, log, stopSignal.signal);
    let backend = stack.backend as import("./model/backend.ts").ReportBackend;
    try {
      if (config.metricsListen !== "" && !stopping) {
        // Loaded only when asked for: prom-client is a tenth of the start-up's module loading.
        const { startMetricsServer } = await import("./servers/metrics.ts");
        const metrics = await startMetricsServer(config.metricsListen, backend, log.child({ component: "metrics" }));
        backend = metrics.backend;
        closers.push(() => metrics.close());
        log.info("metrics listening", { address: metrics.address });
      }
      if (listens.length > 0 && !stopping) {
        const grpc = await startGrpcServer({ backend, hostId: config.hostId, listen: listens, log: log.child({ component: "grpc" }) });
        closers.push(() => grpc.close());
        log.info("gRPC listening", { addresses: grpc.addresses });
      }
      if (config.scopePlugin && !stopping) {
        const scope = await startScopePlugin({ backend, hostId: config.hostId, root: config.pluginsRoot, id: config.pluginId, log: log.child({ component: "scope-plugin" }) });
        closers.push(() => scope.close());
        log.info("Scope plugin listening", { socket: scope.socketPath });
      }
    } catch (error) {
      if (stopping) return;
      log.error("server failed to start", { error: describeError(error) });
      await Promise.allSettled(closers.map((close) => close()));
      await stack.stop();
      process.exit(1);
    }
    if (stopping) return;
    const status = stack.supervisor.status();
    log.info("ready", { source: status.source, reason: status.reason, attachments: status.attachments, hostId: config.hostId, glibcTunables: allocator.glibcTunables, v8OldSpaceFloorMiB: heap.oldSpaceFloorMiB, fdWalk: status.fdWalk });
  })();
  try {
    await startup;
  } catch (error) {
    // Stopped during start-up: the shutdown in progress exits 0.
    if (stopping) return;
    throw error;
  }
}

main().catch((error) => {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: "error", msg: "fatal", code: errorCode(error), error: describeError(error) })}\n`);
  process.exit(1);
});
