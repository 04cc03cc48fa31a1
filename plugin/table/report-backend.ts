/** The ReportBackend the servers read: the table's open connections plus each client's closed ones. */
import type { ClientReport, ConnectionChange, DeliveryCounters, PreparedReport, ReportBackend } from "../model/backend.ts";
import type { Connection } from "../model/connection.ts";
import type { TrackerStatus } from "../model/status.ts";
import { ClientRegistry, type ClientRegistryOptions } from "./client-registry.ts";
import type { ConnectionTable } from "./connection-table.ts";

const nothing = (): void => {};

export function createReportBackend(
  table: ConnectionTable,
  status: () => TrackerStatus,
  clientOptions: ClientRegistryOptions = { maxClosedPerClient: 65_536, clientExpiryMs: 120_000 },
): ReportBackend & { readonly clients: ClientRegistry } {
  const clients = new ClientRegistry(clientOptions);
  let scopeBodiesUndelivered = 0;
  table.subscribe((change) => {
    if (change.type === "close") clients.recordClose(change.connection);
  });
  const prepareReport = (clientId: string): PreparedReport => {
    const open = table.snapshot();
    if (clientId === "") return { connections: open, droppedClosed: 0, firstReport: false, delivered: nothing, notDelivered: nothing, evictedClient: undefined };
    const offer = clients.offerClosed(clientId);
    let settled = false;
    return {
      connections: offer.closed.length === 0 ? open : open.concat(offer.closed),
      droppedClosed: offer.dropped,
      firstReport: offer.firstReport,
      evictedClient: offer.evicted,
      delivered() {
        if (settled) return;
        settled = true;
        offer.delivered();
      },
      notDelivered() {
        if (settled) return;
        settled = true;
        clients.notDelivered();
      },
    };
  };
  return {
    clients,
    report(clientId: string): ClientReport {
      const prepared = prepareReport(clientId);
      prepared.delivered();
      return prepared;
    },
    prepareReport,
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
    delivery(): DeliveryCounters {
      return {
        grpcReportsUndelivered: clients.undelivered,
        scopeBodiesUndelivered,
        clientsEvicted: clients.evicted,
        clientsExpired: clients.expired,
        closesOfEvicted: table.closesOfEvicted,
      };
    },
    noteScopeBodyUndelivered(): void {
      scopeBodiesUndelivered++;
    },
  };
}
