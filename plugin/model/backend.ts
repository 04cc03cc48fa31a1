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
  /** True when this call registered the client (its first report). */
  firstReport: boolean;
}

export interface ReportBackend {
  /** Per-client report. An empty clientId is an anonymous reader: open connections only, no closed ones. */
  report(clientId: string): ClientReport;
  /** Open connections right now. */
  /** Open connections right now: an array shared with other callers until the table changes (read only). */
  openConnections(): readonly Connection[];
  /** Live opens and closes, in the order the table applied them. Returns the unsubscribe function. */
  subscribe(listener: (change: ConnectionChange) => void): () => void;
  status(): TrackerStatus;
  /** Number of clients currently holding closed-connection buffers. */
  clientCount(): number;
}
