/**
 * The JSON report a Scope probe accepts from a plugin: top-level keys are Go field names, exactly
 * one plugin spec, and the "Endpoint" topology.
 *
 * The tracker status travels in two places Scope tolerates:
 * - the spec's `description`, which the Scope UI shows for the plugin, gets a one-line summary
 *   (the spec's `status` field is not ours: the probe overwrites it, and "error: ..." there would
 *   mark the plugin failed);
 * - a top-level "EndpointReporterStatus" object with everything, which Scope's decoder skips as an
 *   unknown field, for people and scripts reading the plugin socket directly.
 * Nothing is added to the nodes: extra latest keys would be merged into every endpoint Scope shows.
 */
import type { Connection } from "../../model/connection.ts";
import type { TrackerStatus } from "../../model/status.ts";
import { activeFlows } from "../../conntrack/active.ts";
import { applyNat } from "../../conntrack/nat-topology.ts";
import type { DeliveryCounters } from "../../model/backend.ts";
import { collectNodes, type EdgeDeriver, renderNodesJsonChunks, type Steps } from "./endpoint-topology.ts";

export const API_VERSION = "1";
export const STATUS_KEY = "EndpointReporterStatus";

export interface PluginIdentity {
  id: string;
  label: string;
  description: string;
}

export interface PluginSpec {
  id: string;
  label: string;
  description: string;
  interfaces: string[];
  api_version: string;
}

export interface ReportStatus {
  source: string;
  since: string;
  reason: string;
  counters: TrackerStatus["counters"];
  clients: number;
  /** Open and closed connections behind this report's nodes. */
  openConnections: number;
  closedConnections: number;
  /** Closed connections this probe will never see (its buffer overflowed). */
  droppedClosed: number;
  /** How handing closes to clients went (gRPC and Scope alike). */
  delivery?: DeliveryCounters;
  generatedAt: string;
  /** NAT mapping from conntrack: on or off, why, counters. */
  conntrack?: TrackerStatus["conntrack"];
}

export interface ReportInput {
  open: readonly Connection[];
  closed: readonly Connection[];
  droppedClosed: number;
  status: TrackerStatus;
  clients: number;
  delivery?: DeliveryCounters;
  now: Date;
}

export function summarizeStatus(status: TrackerStatus): string {
  const since = new Date(status.sinceMs).toISOString();
  const source = status.source === "ebpf" ? "eBPF" : "/proc scanning";
  const nat = status.conntrack === undefined || status.conntrack.enabled ? "" : `; ${status.conntrack.reason}`;
  return `live source: ${source} since ${since} (${status.reason})${nat}`;
}

/** The report as JSON text, in steps; `deriver` carries the host id and remembers per-connection work. */
export function* renderScopeReport(identity: PluginIdentity, deriver: EdgeDeriver, hostId: string, input: ReportInput): Steps<string> {
  return (yield* renderScopeReportBody(identity, deriver, hostId, input)).toString();
}

/** The report as UTF-8 JSON, in steps: what /report sends. */
export function* renderScopeReportBody(identity: PluginIdentity, deriver: EdgeDeriver, hostId: string, input: ReportInput): Steps<Buffer> {
  const timestamp = input.now.toISOString();
  const nodes = yield* collectNodes(input.closed.length === 0 ? input.open : [...input.open, ...input.closed], deriver);
  const flows = activeFlows();
  if (flows?.hasNat) applyNat(nodes, flows.natFlows(), deriver.context);
  const spec: PluginSpec = {
    id: identity.id,
    label: identity.label,
    description: `${identity.description}; ${summarizeStatus(input.status)}`,
    interfaces: ["reporter"],
    api_version: API_VERSION,
  };
  const status: ReportStatus = {
    source: input.status.source,
    since: new Date(input.status.sinceMs).toISOString(),
    reason: input.status.reason,
    counters: { ...input.status.counters },
    clients: input.clients,
    openConnections: input.open.length,
    closedConnections: input.closed.length,
    droppedClosed: input.droppedClosed,
    delivery: input.delivery,
    generatedAt: timestamp,
    conntrack: input.status.conntrack,
  };
  const nodesJson = yield* renderNodesJsonChunks(nodes, timestamp, hostId);
  return Buffer.concat([
    Buffer.from('{"Endpoint":{"nodes":'),
    ...nodesJson,
    Buffer.from(`},"Plugins":${JSON.stringify([spec])},"${STATUS_KEY}":${JSON.stringify(status)}}`),
  ]);
}
