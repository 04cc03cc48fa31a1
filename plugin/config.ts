/**
 * Command-line flags, each with an environment equivalent (ENDPOINT_REPORTER_<FLAG>, e.g.
 * --proc-root -> ENDPOINT_REPORTER_PROC_ROOT). Flags win over the environment. Invalid values are
 * refused at start with ERR_CONFIG, naming the flag.
 */
import { parseArgs } from "node:util";
import { hostname } from "node:os";
import { PluginError } from "./errors.ts";
import { isLogLevel, type LogLevel } from "./log.ts";
import type { SourceChoice } from "./supervisor/supervisor.ts";

export interface Config {
  source: SourceChoice;
  grpcSocket: string;
  grpcListen: string;
  tlsCert: string;
  tlsKey: string;
  tlsCa: string;
  pluginsRoot: string;
  pluginId: string;
  scopePlugin: boolean;
  hostId: string;
  procRoot: string;
  btfPath: string;
  artifactsDir: string;
  logLevel: LogLevel;
  metricsListen: string;
  maxConnections: number;
  maxClosedPerClient: number;
  clientExpiryMs: number;
  ringBufferBytes: number;
  drainIntervalMs: number;
  holdBackMs: number;
  reconcileIntervalMs: number;
  procPollIntervalMs: number;
  deathWindowMs: number;
  ebpfRetryMs: number;
  debugBpfStopFile: string;
  conntrack: boolean;
}

type Spec = { type: "string" | "boolean"; default: string; help: string };

export const flags: Record<string, Spec> = {
  "source": { type: "string", default: "auto", help: "auto | ebpf | procfs" },
  "grpc-socket": { type: "string", default: "/var/run/scope/endpoint-reporter.sock", help: "gRPC Unix socket path (empty: none)" },
  "grpc-listen": { type: "string", default: "", help: "gRPC TCP host:port (plaintext only on loopback; TLS otherwise)" },
  "tls-cert": { type: "string", default: "", help: "PEM certificate for the TCP listener" },
  "tls-key": { type: "string", default: "", help: "PEM private key for the TCP listener" },
  "tls-ca": { type: "string", default: "", help: "PEM CA bundle: when set, clients must present a certificate it signed" },
  "plugins-root": { type: "string", default: "/var/run/scope/plugins", help: "Scope probe plugins directory" },
  "plugin-id": { type: "string", default: "endpoint-reporter", help: "Scope plugin id (socket <root>/<id>/<id>.sock)" },
  "scope-plugin": { type: "boolean", default: "true", help: "serve the Scope probe plugin socket (--no-scope-plugin to disable)" },
  "host-id": { type: "string", default: "", help: "host id for Scope node ids (default $SCOPE_HOSTNAME or the hostname)" },
  "proc-root": { type: "string", default: "/proc", help: "procfs mount to scan" },
  "btf-path": { type: "string", default: "/sys/kernel/btf/vmlinux", help: "kernel BTF the CO-RE programs need" },
  "artifacts-dir": { type: "string", default: "", help: "directory of the BPF objects (*.bpf.o) and Release/scope_tracker.node (empty: build/ beside plugin/, in a checkout or the package)" },
  "log-level": { type: "string", default: "info", help: "debug | info | warn | error | silent" },
  "metrics-listen": { type: "string", default: "", help: "Prometheus metrics host:port (empty: off)" },
  "max-connections": { type: "string", default: "65536", help: "cap on tracked connections (oldest idle evicted)" },
  "max-closed-per-client": { type: "string", default: "65536", help: "closed connections kept per client between reports" },
  "client-expiry-ms": { type: "string", default: "120000", help: "forget a client idle this long" },
  "ring-buffer-bytes": { type: "string", default: "4194304", help: "BPF ring buffer size (power of two, >= 4096)" },
  "drain-interval-ms": { type: "string", default: "20", help: "ring buffer drain period" },
  "hold-back-ms": { type: "string", default: "50", help: "reorder window for events" },
  "reconcile-interval-ms": { type: "string", default: "60000", help: "compare the table with /proc this often" },
  "proc-poll-interval-ms": { type: "string", default: "3000", help: "scan period while on the /proc fallback" },
  "death-window-ms": { type: "string", default: "60000", help: "a second death or loss within this window means fall back" },
  "ebpf-retry-ms": { type: "string", default: "300000", help: "first retry of eBPF after a fallback (doubles up to 1 h)" },
  "conntrack": { type: "boolean", default: "true", help: "read conntrack for NAT mapping and the /proc fallback's short-lived connections (--no-conntrack to disable)" },
  "debug-bpf-stop-file": { type: "string", default: "", help: "debug: when this file appears the eBPF tracker is killed (off when empty)" },
};

export function envName(flag: string): string {
  return `ENDPOINT_REPORTER_${flag.toUpperCase().replaceAll("-", "_")}`;
}

export function usage(): string {
  const lines = Object.entries(flags).map(([name, spec]) => `  --${name.padEnd(24)} ${spec.help} (default ${JSON.stringify(spec.default)}; env ${envName(name)})`);
  return `usage: endpoint-reporter [flags]\n${lines.join("\n")}\n`;
}

export function parseConfig(argv: string[], env: Record<string, string | undefined> = process.env): Config {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: Object.fromEntries(Object.entries(flags).map(([name, spec]) => [name, { type: spec.type }])),
      allowNegative: true,
      strict: true,
    } as Parameters<typeof parseArgs>[0]);
  } catch (error) {
    throw new PluginError("ERR_CONFIG", `${(error as Error).message}\n${usage()}`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const raw = (name: string): string => {
    const v = values[name];
    if (v !== undefined) return String(v);
    return env[envName(name)] ?? flags[name].default;
  };
  const int = (name: string, min = 1): number => {
    const text = raw(name);
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < min) throw new PluginError("ERR_CONFIG", `--${name} must be an integer >= ${min}, got ${JSON.stringify(text)}`);
    return n;
  };
  const source = raw("source");
  if (source !== "auto" && source !== "ebpf" && source !== "procfs") throw new PluginError("ERR_CONFIG", `--source must be auto, ebpf or procfs, got ${JSON.stringify(source)}`);
  const logLevel = raw("log-level");
  if (!isLogLevel(logLevel)) throw new PluginError("ERR_CONFIG", `--log-level must be debug, info, warn, error or silent, got ${JSON.stringify(logLevel)}`);
  const ringBufferBytes = int("ring-buffer-bytes", 4096);
  if ((ringBufferBytes & (ringBufferBytes - 1)) !== 0) throw new PluginError("ERR_CONFIG", `--ring-buffer-bytes must be a power of two, got ${ringBufferBytes}`);
  const pluginId = raw("plugin-id");
  if (!/^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$/.test(pluginId)) throw new PluginError("ERR_CONFIG", `--plugin-id ${JSON.stringify(pluginId)} is not a valid Scope plugin id ([A-Za-z0-9]+ joined by single dashes)`);
  return {
    source,
    grpcSocket: raw("grpc-socket"),
    grpcListen: raw("grpc-listen"),
    tlsCert: raw("tls-cert"),
    tlsKey: raw("tls-key"),
    tlsCa: raw("tls-ca"),
    pluginsRoot: raw("plugins-root"),
    pluginId,
    scopePlugin: raw("scope-plugin") !== "false",
    hostId: raw("host-id") || env.SCOPE_HOSTNAME || hostname(),
    procRoot: raw("proc-root"),
    btfPath: raw("btf-path"),
    artifactsDir: raw("artifacts-dir"),
    logLevel,
    metricsListen: raw("metrics-listen"),
    maxConnections: int("max-connections"),
    maxClosedPerClient: int("max-closed-per-client"),
    clientExpiryMs: int("client-expiry-ms"),
    ringBufferBytes,
    drainIntervalMs: int("drain-interval-ms"),
    holdBackMs: int("hold-back-ms", 0),
    reconcileIntervalMs: int("reconcile-interval-ms"),
    procPollIntervalMs: int("proc-poll-interval-ms"),
    deathWindowMs: int("death-window-ms"),
    ebpfRetryMs: int("ebpf-retry-ms"),
    debugBpfStopFile: raw("debug-bpf-stop-file"),
    conntrack: raw("conntrack") !== "false",
  };
}
