/** The ReportBackend the servers read: the table's open connections plus each client's closed ones. */
import type { ClientReport, ConnectionChange, ReportBackend } from "../model/backend.ts";
import type { Connection } from "../model/connection.ts";
import type { TrackerStatus } from "../model/status.ts";
import { ClientRegistry, type ClientRegistryOptions } from "./client-registry.ts";
import type { ConnectionTable } from "./connection-table.ts";

export function createReportBackend(
  table: ConnectionTable,
  status: () => TrackerStatus,
  clientOptions: ClientRegistryOptions = { maxClosedPerClient: 65_536, clientExpiryMs: 120_000 },
): ReportBackend & { readonly clients: ClientRegistry } {
  const clients = new ClientRegistry(clientOptions);
  table.subscribe((change) => {
    if (change.type === "close") clients.recordClose(change.connection);
  });
  return {
    clients,
    report(clientId: string): ClientReport {
      const open = table.snapshot();
      if (clientId === "") return { connections: open, droppedClosed: 0, firstReport: false };
      const { closed, dropped, firstReport } = clients.takeClosed(clientId);
      return { connections: closed.length === 0 ? open : open.concat(closed), droppedClosed: dropped, firstReport };
    },
    openConnections(): readonly Connection[] {
      return table.snapshot();
    },
    subscribe(listener: (change: ConnectionChange) => void): () => void {
      return table.subscribe(listener);
    },
    status,
    clientCount(): number {
      return clients.size;
    },
  };
}
