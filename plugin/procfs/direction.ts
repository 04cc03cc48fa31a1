import type { Direction } from "../model/connection.ts";

/**
 * Last-resort direction when neither a listening port nor eBPF knows it. Scope's rule
 * (probe/endpoint connectionTuple): a connection is incoming when its local port is lower than its
 * remote port, because servers sit on low, well-known ports and clients on high ephemeral ones;
 * otherwise (equal ports included) it is outgoing.
 */
export function heuristicDirection(localPort: number, remotePort: number): Direction {
  return localPort < remotePort ? "incoming" : "outgoing";
}
