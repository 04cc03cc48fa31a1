/**
 * The standard gRPC health service (grpc.health.v1.Health: Check, Watch, List) on the generated
 * messages. Implemented here rather than taken from grpc-health-check, which loads its .proto at
 * run time through proto-loader and protobufjs: about a tenth of the plugin's start, and most of
 * its installed size, for three small methods.
 */
import { type sendUnaryData, type Server, type ServerUnaryCall, type ServerWritableStream, status as GrpcStatus } from "@grpc/grpc-js";
import {
  type HealthCheckRequest,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthListRequest,
  type HealthListResponse,
  HealthService,
} from "../../generated/health/v1/health.ts";

export type HealthStatus = "SERVING" | "NOT_SERVING";

export class HealthServer {
  readonly #statuses = new Map<string, ServingStatus>();
  /** Open Watch streams by the service they watch; a watched name need not be registered. */
  readonly #watchers = new Map<string, Set<ServerWritableStream<HealthCheckRequest, HealthCheckResponse>>>();

  /** `""` is the server as a whole, as the health protocol defines it. */
  constructor(initial: Readonly<Record<string, HealthStatus>>) {
    for (const [service, status] of Object.entries(initial)) this.#statuses.set(service, ServingStatus[status]);
  }

  setStatus(service: string, status: HealthStatus): void {
    const value = ServingStatus[status];
    if (this.#statuses.get(service) === value) return;
    this.#statuses.set(service, value);
    for (const call of this.#watchers.get(service) ?? []) call.write({ status: value });
  }

  /** Ends every Watch stream (after the caller has said NOT_SERVING): they never end on their own. */
  endWatches(details: string): void {
    for (const calls of this.#watchers.values()) {
      for (const call of calls) call.emit("error", { code: GrpcStatus.UNAVAILABLE, details });
    }
    this.#watchers.clear();
  }

  addToServer(server: Server): void {
    server.addService(HealthService, {
      check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: sendUnaryData<HealthCheckResponse>) => {
        const status = this.#statuses.get(call.request.service);
        if (status === undefined) callback({ code: GrpcStatus.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
        else callback(null, { status });
      },
      watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
        const service = call.request.service;
        let calls = this.#watchers.get(service);
        if (calls === undefined) this.#watchers.set(service, (calls = new Set()));
        calls.add(call);
        call.on("cancelled", () => {
          calls.delete(call);
          if (calls.size === 0 && this.#watchers.get(service) === calls) this.#watchers.delete(service);
        });
        // The protocol's answer for a name the server does not know (yet): SERVICE_UNKNOWN, stream kept.
        call.write({ status: this.#statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN });
      },
      list: (_call: ServerUnaryCall<HealthListRequest, HealthListResponse>, callback: sendUnaryData<HealthListResponse>) => {
        callback(null, { statuses: Object.fromEntries([...this.#statuses].map(([service, status]) => [service, { status }])) });
      },
    });
  }
}
