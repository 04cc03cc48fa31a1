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
const keyParts: Array<string | number> = ["", 0, "", 0];

export function viewKey(localAddress: string, localPort: number, remoteAddress: string, remotePort: number): string {
  keyParts[0] = localAddress;
  keyParts[1] = localPort;
  keyParts[2] = remoteAddress;
  keyParts[3] = remotePort;
  // join() builds one flat string; a template literal leaves a rope that hashing flattens again.
  return keyParts.join("|");
}

/** The connecting socket's view (orig.src -> orig.dst): what the reply tuple says was rewritten. */
export function connectingTranslation(f: Flow): Translation {
  const localRewritten = f.replyDst !== f.origSrc || f.replyDport !== f.origSport;
  const remoteRewritten = f.replySrc !== f.origDst || f.replySport !== f.origDport;
  return {
    localAddress: localRewritten ? f.replyDst : "",
    localPort: localRewritten ? f.replyDport : 0,
    remoteAddress: remoteRewritten ? f.replySrc : "",
    remotePort: remoteRewritten ? f.replySport : 0,
  };
}

/** The answering socket's view (reply.src <- reply.dst): the same rewrites, seen from the other end. */
export function answeringTranslation(f: Flow): Translation {
  const c = connectingTranslation(f);
  return {
    localAddress: c.remoteAddress === "" ? "" : f.origDst,
    localPort: c.remoteAddress === "" ? 0 : f.origDport,
    remoteAddress: c.localAddress === "" ? "" : f.origSrc,
    remotePort: c.localAddress === "" ? 0 : f.origSport,
  };
}
