/** The EndpointReporter handlers over a ReportBackend. */
import { type ServerUnaryCall, type sendUnaryData, status as GrpcStatus } from "@grpc/grpc-js";
import type { ReportBackend } from "../../model/backend.ts";
import type { Logger } from "../../log.ts";
import type {
  ConnectionEvent,
  EndpointReport,
  EndpointReporterServer,
  GetStatusRequest,
  ReportRequest,
  TrackerStatus,
  WatchRequest,
} from "../../generated/endpoint_reporter.ts";
import type { ServerWritableStream } from "@grpc/grpc-js";
import { statusToWire } from "./convert.ts";
import { lazyEndpointReport } from "./report-encoding.ts";
import { withSettlement } from "./report-delivery.ts";
import { WatchStream } from "./watch.ts";

export const MAX_CLIENT_ID_LENGTH = 256;
const EVICTION_LOG_INTERVAL_MS = 10_000;

/**
 * gRPC readers get their own namespace in the backend's client registry, so a tool can never
 * take the closed connections buffered for a Scope probe (whose ids start with "scope:").
 */
export function backendClientId(clientId: string): string {
  return clientId === "" ? "" : `grpc:${clientId}`;
}

export interface ServiceOptions {
  backend: ReportBackend;
  hostId: string;
  maxWatchQueue: number;
  watches: Set<WatchStream>;
  log?: Logger;
}

export function createEndpointReporterService(options: ServiceOptions): EndpointReporterServer {
  const { backend, hostId, watches, log } = options;
  const currentStatus = (): TrackerStatus =>
    statusToWire(backend.status(), { clients: backend.clientCount(), watchers: watches.size, delivery: backend.delivery() });
  // One line per burst, not per eviction: a script minting an id per call would flood the log.
  let lastEvictionLogMs = -Infinity;
  let evictionsSinceLog = 0;
  const noteEviction = (evicted: string) => {
    evictionsSinceLog++;
    const now = Date.now();
    if (now - lastEvictionLogMs < EVICTION_LOG_INTERVAL_MS) return;
    log?.warn("too many gRPC client ids; the least recently asking one was forgotten (it starts over with first_report on its next call)", {
      code: "ERR_TOO_MANY_CLIENTS", evicted: evicted.replace(/^grpc:/, ""), evictedSinceLastLine: evictionsSinceLog,
    });
    lastEvictionLogMs = now;
    evictionsSinceLog = 0;
  };

  return {
    report(call: ServerUnaryCall<ReportRequest, EndpointReport>, callback: sendUnaryData<EndpointReport>) {
      const problem = invalidClientId(call.request.clientId);
      if (problem !== undefined) {
        callback({ code: GrpcStatus.INVALID_ARGUMENT, details: `ERR_BAD_REQUEST: ${problem}` });
        return;
      }
      guard(callback, log, () => {
        const result = backend.prepareReport(backendClientId(call.request.clientId));
        if (result.evictedClient !== undefined) noteEviction(result.evictedClient);
        // Connections are converted and encoded by the Report serializer (report-encoding.ts),
        // once per connection object rather than on every call. The closes in it count as seen
        // only once grpc-js has written it out (report-delivery.ts, installed by server.ts).
        return withSettlement(lazyEndpointReport({
          hostId,
          status: currentStatus(),
          droppedClosed: result.droppedClosed,
          firstReport: result.firstReport,
        }, result.connections), result);
      });
    },

    watch(call: ServerWritableStream<WatchRequest, ConnectionEvent>) {
      try {
        const stream = new WatchStream(call, backend, { maxQueued: options.maxWatchQueue, log }, (s) => watches.delete(s));
        if (!stream.finished) watches.add(stream);
      } catch (error) {
        log?.error("watch failed", { error });
        call.emit("error", { code: GrpcStatus.INTERNAL, details: `watch failed: ${(error as Error).message}` });
      }
    },

    getStatus(_call: ServerUnaryCall<GetStatusRequest, TrackerStatus>, callback: sendUnaryData<TrackerStatus>) {
      guard(callback, log, currentStatus);
    },
  };
}

function invalidClientId(clientId: string): string | undefined {
  if (clientId.length > MAX_CLIENT_ID_LENGTH) return `client_id is longer than ${MAX_CLIENT_ID_LENGTH} characters`;
  // Control characters would end up in logs and status output verbatim.
  if (/[\u0000-\u001f\u007f]/.test(clientId)) return "client_id contains control characters";
  return undefined;
}

function guard<T>(callback: sendUnaryData<T>, log: Logger | undefined, produce: () => T): void {
  let value: T;
  try {
    value = produce();
  } catch (error) {
    log?.error("request failed", { error });
    callback({ code: GrpcStatus.INTERNAL, details: (error as Error).message });
    return;
  }
  callback(null, value);
}
