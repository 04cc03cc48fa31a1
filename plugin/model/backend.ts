/** What the servers (gRPC, Scope plugin, metrics) need from the tracker, and nothing more. */
import type { Connection } from "./connection.ts";
import type { TrackerStatus } from "./status.ts";

export interface ConnectionChange {
  type: "open" | "close";
  connection: Connection;
}

export interface ClientReport {
  /** Open now, plus every connection closed since this client's previous report (each exactly once). */
  connections: readonly Connection[];
  /** Closed connections this client will never see because its buffer overflowed since its last report. */
  droppedClosed: number;
  /** True until an answer has reached this client since it registered (its first report). */
  firstReport: boolean;
}

/** A report whose closes count as delivered only once the server says so. */
export interface PreparedReport extends ClientReport {
  /** The answer reached the client: these closes (and the dropped count) are not offered again. */
  delivered(): void;
  /** The answer did not reach the client: its closes stay for the next call (counted). */
  notDelivered(): void;
  /** The client id that left the registry to make room for this one (its kind was full). */
  evictedClient: string | undefined;
}

/** How delivery of closes went, for status and metrics. */
export interface DeliveryCounters {
  /** gRPC Report answers that did not reach their client; their closes were offered again. */
  grpcReportsUndelivered: number;
  /** Scope /report bodies not sent whole (the probe went away first); their closes were served again. HEAD is not counted. */
  scopeBodiesUndelivered: number;
  /** Client ids dropped because their kind held the most allowed, least recently asking first. */
  clientsEvicted: number;
  /** Client ids forgotten after not asking for the client expiry. */
  clientsExpired: number;
  /** Real closes of connections the table had evicted (published as closed at eviction, not again). */
  closesOfEvicted: number;
}

export function emptyDeliveryCounters(): DeliveryCounters {
  return { grpcReportsUndelivered: 0, scopeBodiesUndelivered: 0, clientsEvicted: 0, clientsExpired: 0, closesOfEvicted: 0 };
}

export interface ReportBackend {
  /**
   * Per-client report, its closes handed over at once (for readers in this process). An empty
   * clientId is an anonymous reader: open connections only, no closed ones.
   */
  report(clientId: string): ClientReport;
  /** The same report for a reader across a transport: its closes move only on `delivered()`. */
  prepareReport(clientId: string): PreparedReport;
  /** Open connections right now: an array shared with other callers until the table changes (read only). */
  openConnections(): readonly Connection[];
  /** Live opens and closes, in the order the table applied them. Returns the unsubscribe function. */
  subscribe(listener: (change: ConnectionChange) => void): () => void;
  status(): TrackerStatus;
  /** Number of clients currently holding closed-connection buffers. */
  clientCount(): number;
  delivery(): DeliveryCounters;
  /** Counts a Scope body that did not go out whole. */
  noteScopeBodyUndelivered(): void;
}
