/**
 * What a NATed conntrack flow means for the connections and endpoints we report.
 *
 * Scope's natMapper (probe/endpoint/nat.go, toMapping): when the reply goes back to the original
 * source (orig.src == reply.dst) only the destination was rewritten (DNAT): the real endpoint is
 * reply.src:sport, known to the connecting side as orig.dst:dport. Otherwise the source was
 * rewritten (SNAT): the real endpoint is orig.src:sport, known to the answering side as
 * reply.dst:dport.
 */
import type { Flow } from "./record.ts";

export interface EndpointMapping {
  originalAddress: string;
  originalPort: number;
  rewrittenAddress: string;
  rewrittenPort: number;
}

export function toMapping(f: Flow): EndpointMapping {
  if (f.origSrc === f.replyDst) {
    return { originalAddress: f.replySrc, originalPort: f.replySport, rewrittenAddress: f.origDst, rewrittenPort: f.origDport };
  }
  return { originalAddress: f.origSrc, originalPort: f.origSport, rewrittenAddress: f.replyDst, rewrittenPort: f.replyDport };
}

/**
 * The other side of the NAT for one local socket: `local*` is our end as the peer sees it, set
 * when the NAT rewrote our end; `remote*` is where the peer really is, set when it rewrote the
 * peer's end. Empty address and port 0 where nothing was rewritten.
 */
export interface Translation {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

/** Key of a socket's view of a flow (no namespace: conntrack here sees flows routed through this namespace). */
export function viewKey(localAddress: string, localPort: number, remoteAddress: string, remotePort: number): string {
  return `${localAddress}|${localPort}|${remoteAddress}|${remotePort}`;
}

/**
 * The two sockets' views of a NATed flow: the connecting side sends orig.src -> orig.dst, the
 * answering side sees reply.src <- reply.dst.
 */
export function flowViews(f: Flow): Array<{ key: string; translation: Translation }> {
  const connecting: Translation = {
    localAddress: "", localPort: 0, remoteAddress: "", remotePort: 0,
  };
  if (f.replyDst !== f.origSrc || f.replyDport !== f.origSport) {
    connecting.localAddress = f.replyDst;
    connecting.localPort = f.replyDport;
  }
  if (f.replySrc !== f.origDst || f.replySport !== f.origDport) {
    connecting.remoteAddress = f.replySrc;
    connecting.remotePort = f.replySport;
  }
  const answering: Translation = {
    localAddress: connecting.remoteAddress === "" ? "" : f.origDst,
    localPort: connecting.remoteAddress === "" ? 0 : f.origDport,
    remoteAddress: connecting.localAddress === "" ? "" : f.origSrc,
    remotePort: connecting.localAddress === "" ? 0 : f.origSport,
  };
  return [
    { key: viewKey(f.origSrc, f.origSport, f.origDst, f.origDport), translation: connecting },
    { key: viewKey(f.replySrc, f.replySport, f.replyDst, f.replyDport), translation: answering },
  ];
}
