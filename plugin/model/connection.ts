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

/** Decimal texts of ports and namespace inodes, made once: number-to-string was the key's main cost. */
const portTexts: Array<string | undefined> = new Array(65536);
const netnsTexts = new Map<number, string>();

function netnsText(netns: number): string {
  let text = netnsTexts.get(netns);
  if (text === undefined) {
    if (netnsTexts.size >= 65_536) netnsTexts.clear();
    text = String(netns);
    netnsTexts.set(netns, text);
  }
  return text;
}

/** Reused by every key build: a fresh array per key was a measurable share of the event path. */
const keyParts = ["", "", "", "", ""];

/**
 * Identity of a connection in the table: the four-tuple plus the namespace, because containers
 * reuse the same private addresses and loopback in every namespace.
 */
export function connectionKey(c: Pick<Connection, "localAddress" | "localPort" | "remoteAddress" | "remotePort" | "netns">): string {
  return tupleKey(c.netns, c.localAddress, c.localPort, c.remoteAddress, c.remotePort);
}

/** connectionKey from the fields themselves. */
export function tupleKey(netns: number, localAddress: string, localPort: number, remoteAddress: string, remotePort: number): string {
  keyParts[0] = netnsText(netns);
  keyParts[1] = localAddress;
  keyParts[2] = portTexts[localPort] ??= String(localPort);
  keyParts[3] = remoteAddress;
  keyParts[4] = portTexts[remotePort] ??= String(remotePort);
  // join() builds one flat string; a template literal would keep a tree of string pieces per key.
  return keyParts.join("|");
}
