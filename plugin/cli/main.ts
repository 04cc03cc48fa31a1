/** endpoint-reporter-cli: the tracked connections, live, for people (and --json for scripts). */
import { type ServiceError, status as GrpcStatus } from "@grpc/grpc-js";
import type { EndpointReporterClient } from "../generated/endpoint_reporter.ts";
import * as pb from "../generated/endpoint_reporter.ts";
import { type CliArgs, parseCliArgs, USAGE } from "./args.ts";
import { connectClient, targetOf, UnreachableError } from "./connect.ts";
import {
  compareConnections,
  connectionJson,
  connectionRow,
  eventName,
  formatStatus,
  formatTable,
  HEADER,
  statusJson,
  watchEventLine,
  watchHeader,
} from "./format.ts";

export const EXIT_OK = 0;
export const EXIT_SERVER_ERROR = 1;
export const EXIT_UNREACHABLE = 2;
export const EXIT_USAGE = 64;

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Ends --watch (Ctrl-C in the real program). */
  signal?: AbortSignal;
}

export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let args: CliArgs;
  try {
    args = parseCliArgs(argv);
  } catch (error) {
    io.stderr(`endpoint-reporter-cli: ${(error as Error).message}\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  if (args.help) {
    io.stdout(`${USAGE}\n`);
    return EXIT_OK;
  }
  let client: EndpointReporterClient;
  try {
    client = await connectClient(args);
  } catch (error) {
    io.stderr(`endpoint-reporter-cli: ${(error as Error).message}\n`);
    return error instanceof UnreachableError ? EXIT_UNREACHABLE : EXIT_SERVER_ERROR;
  }
  try {
    if (args.command === "status") await showStatus(client, args, io);
    else if (args.watch) await watch(client, args, io);
    else await showConnections(client, args, io);
    return EXIT_OK;
  } catch (error) {
    const e = error as ServiceError;
    const unreachable = e.code === GrpcStatus.UNAVAILABLE;
    io.stderr(`endpoint-reporter-cli: ${unreachable ? `lost the endpoint reporter at ${targetOf(args)}: ` : ""}${e.details || e.message}\n`);
    return unreachable ? EXIT_UNREACHABLE : EXIT_SERVER_ERROR;
  } finally {
    client.close();
  }
}

function unary<T>(start: (callback: (error: ServiceError | null, value: T) => void) => unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    start((error, value) => (error ? reject(error) : resolve(value)));
  });
}

async function showStatus(client: EndpointReporterClient, args: CliArgs, io: CliIo): Promise<void> {
  const status = await unary<pb.TrackerStatus>((cb) => client.getStatus({}, cb));
  io.stdout(args.json ? `${JSON.stringify(statusJson(status), null, 2)}\n` : formatStatus(status));
}

async function showConnections(client: EndpointReporterClient, args: CliArgs, io: CliIo): Promise<void> {
  // Anonymous: a look at the table must not consume closed connections meant for other readers.
  const report = await unary<pb.EndpointReport>((cb) => client.report({ clientId: "" }, cb));
  const connections = [...report.connections].sort(compareConnections);
  if (args.json) {
    io.stdout(`${JSON.stringify({ hostId: report.hostId, status: statusJson(report.status), connections: connections.map(connectionJson) }, null, 2)}\n`);
    return;
  }
  io.stdout(formatTable([HEADER, ...connections.map(connectionRow)]));
}

function watch(client: EndpointReporterClient, args: CliArgs, io: CliIo): Promise<void> {
  return new Promise((resolve, reject) => {
    const call = client.watch({ clientId: "" });
    const stop = () => call.cancel();
    if (io.signal?.aborted) stop();
    io.signal?.addEventListener("abort", stop, { once: true });
    if (!args.json) io.stdout(watchHeader());
    call.on("data", (event: pb.ConnectionEvent) => {
      if (args.json) {
        const line = { type: eventName(event.type), sequence: event.sequence, ...(event.connection ? { connection: connectionJson(event.connection) } : { snapshotCount: event.snapshotCount }) };
        io.stdout(`${JSON.stringify(line)}\n`);
      } else {
        io.stdout(watchEventLine(event));
      }
    });
    call.on("error", (error: ServiceError) => {
      io.signal?.removeEventListener("abort", stop);
      if (error.code === GrpcStatus.CANCELLED && io.signal?.aborted) resolve();
      else reject(error);
    });
    call.on("end", () => {
      io.signal?.removeEventListener("abort", stop);
      resolve();
    });
  });
}
