/**
 * The conntrack flows the servers consult: set by the tracker stack while its conntrack source
 * runs. The servers read it at encode time (gRPC) and build time (Scope report), so that their
 * modules need no new constructor arguments; unset (tests of the servers alone, conntrack off),
 * nothing is translated or copied.
 */
import type { FlowTable } from "./flow-table.ts";
import type { Translation } from "./nat.ts";

let active: FlowTable | undefined;

export function setActiveFlows(flows: FlowTable | undefined): void {
  active = flows;
}

export function activeFlows(): FlowTable | undefined {
  return active;
}

/** The translation for a connection's view, if conntrack shows one. */
export function translationFor(c: { localAddress: string; localPort: number; remoteAddress: string; remotePort: number }): Translation | undefined {
  return active?.translation(c.localAddress, c.localPort, c.remoteAddress, c.remotePort);
}

/** Changes whenever a translation appeared for a connection that may already have been encoded. */
export function translationVersion(): number {
  return active?.lateVersion ?? 0;
}
