/** Command line of endpoint-reporter-cli. */
import { parseArgs } from "node:util";
import { DEFAULT_GRPC_SOCKET } from "../servers/grpc/listen-config.ts";

export const USAGE = `usage: endpoint-reporter-cli [--socket PATH | --address HOST:PORT] [--json] [--watch] [status]

Shows the TCP connections the endpoint reporter tracks, like ss.

  (no command)        the open connections now
  --watch             the open connections, then every open (+) and close (-) as it happens
  status              which source is live (eBPF or /proc), why, since when, and the counters

  --socket PATH       the gRPC Unix socket (default ${DEFAULT_GRPC_SOCKET})
  --address HOST:PORT the gRPC server over TCP instead
  --tls-ca FILE       CA to verify the server (TCP); TLS is used whenever a TLS option is given
  --tls-cert FILE     client certificate (mutual TLS), with --tls-key FILE
  --tls-server-name N name to check in the server's certificate
  --timeout MS        give up connecting after MS milliseconds (default 3000)
  --json              machine-readable output (one JSON document; NDJSON with --watch)
  -h, --help          this text

exit codes: 0 ok, 1 the server answered with an error, 2 the server is not reachable, 64 usage error`;

export interface CliArgs {
  command: "connections" | "status";
  socket: string;
  address?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string; serverName?: string };
  json: boolean;
  watch: boolean;
  timeoutMs: number;
  help: boolean;
}

export class UsageError extends Error {}

export function parseCliArgs(argv: readonly string[]): CliArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        socket: { type: "string" },
        address: { type: "string" },
        "tls-ca": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-server-name": { type: "string" },
        timeout: { type: "string" },
        json: { type: "boolean", default: false },
        watch: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1 || (positionals.length === 1 && positionals[0] !== "status")) {
    throw new UsageError(`unknown command ${JSON.stringify(positionals.join(" "))}`);
  }
  const command = positionals[0] === "status" ? "status" : "connections";
  if (values.socket !== undefined && values.address !== undefined) throw new UsageError("give --socket or --address, not both");
  if (command === "status" && values.watch) throw new UsageError("--watch does not apply to status");
  const timeoutMs = values.timeout === undefined ? 3000 : Number(values.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new UsageError(`--timeout must be a positive number of milliseconds`);
  const anyTls = [values["tls-ca"], values["tls-cert"], values["tls-key"], values["tls-server-name"]].some((v) => v !== undefined);
  if (anyTls && values.address === undefined) throw new UsageError("TLS options apply to --address only");
  if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) throw new UsageError("--tls-cert and --tls-key go together");
  if (values.address !== undefined && !/^(\[[0-9A-Fa-f:.]+\]|[^:\s]+):\d{1,5}$/.test(values.address)) {
    throw new UsageError(`--address must be HOST:PORT (IPv6 as [ADDR]:PORT), got ${JSON.stringify(values.address)}`);
  }
  return {
    command,
    socket: values.socket ?? DEFAULT_GRPC_SOCKET,
    address: values.address,
    tls: anyTls
      ? { caFile: values["tls-ca"], certFile: values["tls-cert"], keyFile: values["tls-key"], serverName: values["tls-server-name"] }
      : undefined,
    json: values.json ?? false,
    watch: values.watch ?? false,
    timeoutMs,
    help: values.help ?? false,
  };
}
