/**
 * The kernel's own view of established TCP connections in a namespace, through `ss` (sock_diag
 * netlink, not /proc): an independent check of what the tracker's table holds.
 */
import { execFileSync } from "node:child_process";
import { connectionKey } from "../../plugin/model/connection.ts";

/** Table keys of every ESTABLISHED TCP socket in the named namespace (IPv4 and IPv6). */
export function establishedKeys(netnsName: string, netnsInode: number): string[] {
  const out = execFileSync("ip", ["netns", "exec", netnsName, "ss", "-tnH", "state", "established"], { encoding: "utf8" });
  const keys: string[] = [];
  for (const line of out.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4) continue;
    const [local, peer] = [split(fields[2]), split(fields[3])];
    keys.push(connectionKey({ netns: netnsInode, localAddress: local.address, localPort: local.port, remoteAddress: peer.address, remotePort: peer.port }));
  }
  return keys.sort();
}

function split(endpoint: string): { address: string; port: number } {
  const colon = endpoint.lastIndexOf(":");
  let address = endpoint.slice(0, colon);
  if (address.startsWith("[")) address = address.slice(1, -1);
  if (address.startsWith("::ffff:") && address.includes(".")) address = address.slice(7);
  return { address, port: Number(endpoint.slice(colon + 1)) };
}
