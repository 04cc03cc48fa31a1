/**
 * Scope's endpoint node ids (report/id.go, makeAddressID), so that our nodes merge with the ones
 * the probe and other probes make for the same sockets: `<scope>;<ip>;<port>`, where the address is
 * printed as Go's net.IP.String() does, and the scope is empty for ordinary addresses, the host id
 * for the probe's local networks, and the host id (plus "-<netns>" when known) for loopback.
 */
import { isIP } from "node:net";
import { formatIPv4, formatIPv6 } from "../../model/address.ts";

/** 4 bytes for IPv4, 16 for IPv6; undefined when the text is not an IP address. */
export function parseIp(text: string): Uint8Array | undefined {
  const family = isIP(text);
  if (family === 4) return Uint8Array.from(text.split(".").map(Number));
  if (family !== 6) return undefined;
  let head = text;
  let tailV4: number[] = [];
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".", lastColon)) {
    tailV4 = text.slice(lastColon + 1).split(".").map(Number);
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const [left, right] = head.includes("::") ? head.split("::") : [head, undefined];
  const groups = (s: string | undefined) => (s === undefined || s === "" ? [] : s.split(":").map((g) => parseInt(g, 16)));
  const l = groups(left);
  const r = groups(right);
  const all = right === undefined ? l : [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  if (tailV4.length === 4) bytes.set(tailV4, 12);
  return bytes;
}

/** Go's net.IP.String(): IPv4 and IPv4-mapped IPv6 dotted, other IPv6 in RFC 5952 form. */
export function canonicalIp(bytes: Uint8Array): string {
  return bytes.length === 4 ? formatIPv4(bytes, 0) : formatIPv6(bytes, 0);
}

/** The IPv4 bytes of an IPv4 or IPv4-mapped address, like Go's To4(); undefined for real IPv6. */
function to4(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length === 4) return bytes;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return undefined;
  return bytes[10] === 0xff && bytes[11] === 0xff ? bytes.subarray(12) : undefined;
}

export function isLoopbackIp(bytes: Uint8Array): boolean {
  const v4 = to4(bytes);
  if (v4 !== undefined) return v4[0] === 127;
  for (let i = 0; i < 15; i++) if (bytes[i] !== 0) return false;
  return bytes[15] === 1;
}

export interface Network {
  bytes: Uint8Array;
  prefix: number;
}

/** Parses "10.32.0.0/12"-style CIDRs (the probe's local networks, e.g. the docker bridge). */
export function parseNetwork(cidr: string): Network | undefined {
  const slash = cidr.indexOf("/");
  if (slash < 0) return undefined;
  const bytes = parseIp(cidr.slice(0, slash));
  const prefixText = cidr.slice(slash + 1);
  const prefix = Number(prefixText);
  if (bytes === undefined || !/^\d+$/.test(prefixText) || prefix > bytes.length * 8) return undefined;
  return { bytes: to4(bytes) ?? bytes, prefix };
}

export function networkContains(network: Network, ip: Uint8Array): boolean {
  const candidate = network.bytes.length === 4 ? to4(ip) : ip.length === 16 ? ip : undefined;
  if (candidate === undefined || candidate.length !== network.bytes.length) return false;
  let bits = network.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((candidate[i] & mask) !== (network.bytes[i] & mask)) return false;
  }
  return true;
}

export interface NodeIdContext {
  /** Must be JSON-safe (no quote, backslash or control characters): ids are written unescaped. */
  hostId: string;
  localNetworks: readonly Network[];
}

/** report.makeAddressID: `<scope>;<ip>`, the namespace counting only when non-zero and only for loopback. */
export function addressId(ctx: NodeIdContext, netns: number, address: string): string {
  const bytes = parseIp(address);
  // Not an IP: kept as given, but JSON-safe, because ids are written into JSON unescaped.
  if (bytes === undefined) return `;${address.replace(/[^\x20-\x7e]|["\\]/g, "_")}`;
  let scope = "";
  if (ctx.localNetworks.some((n) => networkContains(n, bytes))) {
    scope = ctx.hostId;
  } else if (isLoopbackIp(bytes)) {
    scope = netns > 0 ? `${ctx.hostId}-${netns}` : ctx.hostId;
  }
  return `${scope};${canonicalIp(bytes)}`;
}

/** report.MakeEndpointNodeIDB. */
export function endpointNodeId(ctx: NodeIdContext, netns: number, address: string, port: number): string {
  return `${addressId(ctx, netns, address)};${port}`;
}

/** report.MakeHostNodeID. */
export function hostNodeId(hostId: string): string {
  return `${hostId};<host>`;
}
