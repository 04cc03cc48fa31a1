/** What every part of the plugin agrees a tracked TCP connection is: one local socket's view of it. */

export type Direction = "incoming" | "outgoing" | "unknown";
export type SourceKind = "ebpf" | "procfs";

export interface Connection {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  /** Network namespace inode; 0 when unknown. */
  netns: number;
  /** Owning process (tgid); 0 when unknown. */
  pid: number;
  /** Process name; "" when unknown. */
  comm: string;
  direction: Direction;
  closed: boolean;
  source: SourceKind;
}

/**
 * Identity of a connection in the table: the four-tuple plus the namespace, because containers
 * reuse the same private addresses and loopback in every namespace.
 */
export function connectionKey(c: Pick<Connection, "localAddress" | "localPort" | "remoteAddress" | "remotePort" | "netns">): string {
  // join() builds one flat string; a template literal would keep a tree of string pieces per key.
  return [c.netns, c.localAddress, c.localPort, c.remoteAddress, c.remotePort].join("|");
}
