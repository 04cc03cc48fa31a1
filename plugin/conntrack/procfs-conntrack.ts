/**
 * What conntrack adds to /proc scans (Scope's connection_tracker.go, seenTuples and walkFlows):
 * - a scanned connection no listening socket explains gets its direction from the flow's
 *   original direction (the original source is the side that connected), before the port
 *   heuristic would guess (with eBPF live only NATed flows are kept, as Scope seeds from them);
 * - while /proc is the live source, flows that opened and ended between two scans, never seen by
 *   a scan, reach every client once as closed connections (pid 0: no scan saw their process),
 *   seen from the connecting side.
 */
import type { Connection } from "../model/connection.ts";
import type { ConnectionTable } from "../table/connection-table.ts";
import type { ConntrackSource } from "./conntrack-source.ts";
import { viewKey } from "./nat.ts";
import type { Flow } from "./record.ts";

export interface ProcfsConntrackCounters {
  /** Scanned connections whose direction conntrack decided. */
  directionsFromConntrack: number;
  /** Connections that opened and closed between two scans, reported from conntrack. */
  shortLivedReported: number;
}

export class ProcfsConntrack {
  readonly #source: ConntrackSource;
  readonly #table: ConnectionTable;
  readonly #procfsLive: () => boolean;
  readonly counters: ProcfsConntrackCounters = { directionsFromConntrack: 0, shortLivedReported: 0 };

  constructor(source: ConntrackSource, table: ConnectionTable, procfsLive: () => boolean) {
    this.#source = source;
    this.#table = table;
    this.#procfsLive = procfsLive;
  }

  /** Wraps a /proc scan: directions first, then the short-lived connections since the previous scan. */
  wrap<O extends { connections: readonly Connection[] }>(scan: (signal: AbortSignal) => Promise<O>): (signal: AbortSignal) => Promise<O> {
    return async (signal) => {
      const outcome = await scan(signal);
      const flows = this.#source.flows;
      if (!this.#source.enabled) {
        flows.collectEnded = false;
        return outcome;
      }
      const scanned = outcome.connections;
      const directed = this.#directions(scanned);
      const procfs = this.#procfsLive();
      if (procfs && flows.collectEnded) this.#reportShortLived(directed);
      // From the first scan on /proc: every flow kept, ended ones collected for the next scan.
      flows.collectEnded = procfs;
      this.#source.setKeepAll(procfs);
      return directed === scanned ? outcome : { ...outcome, connections: directed };
    };
  }

  #directions(scanned: readonly Connection[]): readonly Connection[] {
    if (!scanned.some((c) => c.direction === "unknown")) return scanned;
    const byView = new Map<string, "incoming" | "outgoing">();
    for (const f of this.#source.flows.activeFlows()) {
      byView.set(viewKey(f.origSrc, f.origSport, f.origDst, f.origDport), "outgoing");
      byView.set(viewKey(f.replySrc, f.replySport, f.replyDst, f.replyDport), "incoming");
    }
    if (byView.size === 0) return scanned;
    return scanned.map((c) => {
      if (c.direction !== "unknown") return c;
      const direction = byView.get(viewKey(c.localAddress, c.localPort, c.remoteAddress, c.remotePort));
      if (direction === undefined) return c;
      this.counters.directionsFromConntrack++;
      return { ...c, direction };
    });
  }

  #reportShortLived(scanned: readonly Connection[]): void {
    const ended = this.#source.flows.takeEnded();
    if (ended.length === 0) return;
    // Every socket view a scan has seen: the table holds what the previous scans found until this
    // scan's reconcile closes it.
    const seen = new Set<string>();
    for (const c of this.#table.values()) seen.add(viewKey(c.localAddress, c.localPort, c.remoteAddress, c.remotePort));
    for (const c of scanned) seen.add(viewKey(c.localAddress, c.localPort, c.remoteAddress, c.remotePort));
    for (const f of ended) {
      if (seen.has(viewKey(f.origSrc, f.origSport, f.origDst, f.origDport)) || seen.has(viewKey(f.replySrc, f.replySport, f.replyDst, f.replyDport))) continue;
      const c = connectingSide(f);
      if (this.#table.has(`0|${c.localAddress}|${c.localPort}|${c.remoteAddress}|${c.remotePort}`)) continue;
      this.#table.passOpen(c);
      this.#table.passClose(c);
      this.counters.shortLivedReported++;
    }
  }
}

function connectingSide(f: Flow): Connection {
  return {
    localAddress: f.origSrc, localPort: f.origSport, remoteAddress: f.origDst, remotePort: f.origDport,
    netns: 0, pid: 0, comm: "", direction: "outgoing", closed: false, source: "procfs",
  };
}
