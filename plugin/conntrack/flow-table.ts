/**
 * The conntrack flows of this network namespace, as Scope's conntrack walker keeps them
 * (probe/endpoint/conntrack.go): TCP only; a flow is active from its dump or NEW until it reaches
 * TIME_WAIT or CLOSE or is destroyed; flows that ended since the last look are handed out once
 * (for the /proc fallback's short-lived connections). NATed flows are also indexed by each
 * socket's view, for the translation a connection carries, and stay there for a grace period
 * after they end, because the connection's close reaches clients after the flow's end.
 *
 * Flows are known by conntrack's id, as Scope's walker keys them (CtId): a 32-bit hash, so among
 * 100k flows one pair may share an id and count as one.
 *
 * Bounded: at most `maxFlows` active flows and `maxEnded` ended ones waiting to be taken; what
 * does not fit is counted, never held.
 */
import { CT_RECORD_SIZE, CT_TCP_CLOSE, CT_TCP_TIME_WAIT, CtKind, decodeFlow, type Flow, recordCount, recordId, recordIsNat, recordKind, recordTcpState } from "./record.ts";
import { IdMap } from "./id-map.ts";
import { answeringTranslation, connectingTranslation, type Translation, viewKey } from "./nat.ts";

export interface FlowTableOptions {
  maxFlows: number;
  maxEnded: number;
  /** How long an ended NAT flow still translates its connections (and copies its endpoint). */
  natGraceMs: number;
  now?: () => number;
  /** True when a tracked connection may already hold this local port (a translation that arrives late). */
  holdsLocalPort?: (port: number) => boolean;
}

export const DEFAULT_FLOW_TABLE_OPTIONS: FlowTableOptions = { maxFlows: 262_144, maxEnded: 65_536, natGraceMs: 30_000 };

export interface FlowTableCounters {
  /** Active flows now, and NATed ones among them (including the ones in their grace period). */
  flows: number;
  natFlows: number;
  /** ENOBUFS the kernel reported: events it dropped for us (each followed by a dump). */
  lostEvents: number;
  dumps: number;
  lastDumpFlows: number;
  /** Flows that did not fit in maxFlows, ended flows that did not fit in maxEnded, records that did not decode. */
  flowsDropped: number;
  endedDropped: number;
  malformedRecords: number;
  /** Untranslated flows seen while only NATed ones are kept (eBPF live). */
  untranslatedSkipped: number;
  /** Records applied (flows of dumps and events, markers). */
  records: number;
}

export class FlowTable {
  readonly #options: FlowTableOptions;
  readonly #now: () => number;
  readonly #active = new IdMap<Flow>();
  readonly #nat = new IdMap<Flow>();
  /** NATed flows by the connecting socket's view (orig tuple) and the answering one's (reply tuple). */
  readonly #byOrig = new Map<string, Flow>();
  readonly #byReply = new Map<string, Flow>();
  /** NATed flows not yet in #byOrig/#byReply: indexed on the first lookup after they came. */
  #unindexed: Flow[] = [];
  #ended: Flow[] = [];
  /** Ended NAT flows in the order they ended, for expiry from the front. */
  #natEnded: Flow[] = [];
  #natEndedHead = 0;
  #generation = 0;
  #activeCount = 0;
  #dumping = false;
  /** Bumped when a translation appears for a socket that may already be reported (caches of encoded connections must drop it). */
  lateVersion = 0;
  /** Keep ended flows for takeEnded (only the /proc fallback asks; otherwise they would pile up). */
  collectEnded = false;
  /**
   * Keep untranslated flows too (the /proc fallback's directions and short-lived connections).
   * Otherwise only NATed flows are kept, as Scope's natMapper and its seeding keep them; turning
   * this on needs a fresh dump to find the untranslated flows that already exist.
   */
  keepAll = false;
  readonly counters: FlowTableCounters = {
    flows: 0, natFlows: 0, lostEvents: 0, dumps: 0, lastDumpFlows: 0, flowsDropped: 0, endedDropped: 0, malformedRecords: 0, untranslatedSkipped: 0, records: 0,
  };

  constructor(options: Partial<FlowTableOptions> = {}) {
    this.#options = { ...DEFAULT_FLOW_TABLE_OPTIONS, ...options };
    this.#now = this.#options.now ?? Date.now;
  }

  /** Applies one batch of records from the reader thread. */
  apply(batch: Uint8Array): void {
    const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
    const usable = batch.length - (batch.length % CT_RECORD_SIZE);
    if (usable !== batch.length) this.counters.malformedRecords++;
    this.counters.records += usable / CT_RECORD_SIZE;
    for (let at = 0; at < usable; at += CT_RECORD_SIZE) {
      const kind = recordKind(batch, at);
      switch (kind) {
        case CtKind.dumped:
        case CtKind.new: {
          const state = recordTcpState(batch, at);
          if (state === CT_TCP_TIME_WAIT || state === CT_TCP_CLOSE) {
            this.#end(recordId(view, at));
            break;
          }
          // Untranslated flows matter only to the /proc fallback: not decoded otherwise.
          if (!this.keepAll && !recordIsNat(batch, at)) {
            this.counters.untranslatedSkipped++;
            break;
          }
          // A flow's tuples never change: one already known (a dump after lost events) is only confirmed.
          const known = this.#active.get(recordId(view, at));
          if (known !== undefined) {
            known.seen = this.#generation;
            break;
          }
          const flow = decodeFlow(batch, view, at, this.#generation);
          if (flow === undefined) this.counters.malformedRecords++;
          else this.#add(flow);
          break;
        }
        case CtKind.ended:
        case CtKind.destroyed:
          this.#end(recordId(view, at));
          break;
        case CtKind.dumpBegin:
          this.#generation++;
          this.#dumping = true;
          break;
        case CtKind.dumpEnd:
          this.#finishDump(recordCount(view, at));
          break;
        case CtKind.lost:
          this.counters.lostEvents = recordCount(view, at);
          break;
        default:
          this.counters.malformedRecords++;
      }
    }
    this.#expireNat();
    this.counters.flows = this.#activeCount;
    this.counters.natFlows = this.#nat.size;
  }

  /** The translation conntrack shows for one socket's view, if its flow is NATed. */
  translation(localAddress: string, localPort: number, remoteAddress: string, remotePort: number): Translation | undefined {
    if (this.#unindexed.length > 0) this.#index();
    if (this.#byOrig.size === 0) return undefined;
    const key = viewKey(localAddress, localPort, remoteAddress, remotePort);
    const connecting = this.#byOrig.get(key);
    if (connecting !== undefined) return connectingTranslation(connecting);
    const answering = this.#byReply.get(key);
    return answering === undefined ? undefined : answeringTranslation(answering);
  }

  /** NATed flows, active or in their grace period: what Scope's natMapper walks. */
  natFlows(): Flow[] {
    this.#expireNat();
    const out: Flow[] = [];
    for (const f of this.#nat.values()) out.push(f);
    return out;
  }

  get hasNat(): boolean {
    return this.#nat.size > 0;
  }

  *activeFlows(): IterableIterator<Flow> {
    yield* this.#active.values();
  }

  /** Flows that ended since the previous call, each handed out once. */
  takeEnded(): Flow[] {
    if (!this.collectEnded) return [];
    const ended = this.#ended;
    this.#ended = [];
    return ended;
  }

  /** Everything forgotten (the source stopped): nothing stale translates or is copied. */
  clear(): void {
    this.#active.clear();
    this.#nat.clear();
    this.#byOrig.clear();
    this.#byReply.clear();
    this.#unindexed = [];
    this.#ended = [];
    this.#natEnded = [];
    this.#natEndedHead = 0;
    this.#activeCount = 0;
    this.counters.flows = 0;
    this.counters.natFlows = 0;
  }

  #add(flow: Flow): void {
    if (this.#activeCount >= this.#options.maxFlows) {
      this.counters.flowsDropped++;
      return;
    }
    this.#active.set(flow.id, flow);
    this.#activeCount++;
    if (!flow.nat) return;
    if (!this.#nat.has(flow.id) && this.#nat.size >= this.#options.maxFlows) {
      this.counters.flowsDropped++;
    } else {
      this.#nat.set(flow.id, flow);
      this.#unindexed.push(flow);
      // Nobody may ever ask (a host with a Scope probe only): left for translation() to index,
      // but never more pending than twice the NAT flows there are.
      if (this.#unindexed.length > 2 * this.#nat.size + 1024) this.#unindexed = this.#unindexed.filter((f) => this.#nat.get(f.id) === f);
      const holds = this.#options.holdsLocalPort;
      if (holds !== undefined && (holds(flow.origSport) || holds(flow.replySport))) this.lateVersion++;
    }
  }

  #end(id: number): void {
    const flow = this.#active.get(id);
    if (flow === undefined) return;
    this.#active.delete(id);
    this.#activeCount--;
    if (this.collectEnded) {
      if (this.#ended.length < this.#options.maxEnded) this.#ended.push(flow);
      else this.counters.endedDropped++;
    }
    if (this.#nat.get(id) === flow) {
      flow.endedMs = this.#now();
      this.#natEnded.push(flow);
    }
  }

  /** Indexes the NATed flows added since the last lookup by both sockets' views. */
  #index(): void {
    for (const f of this.#unindexed) {
      if (this.#nat.get(f.id) !== f) continue;
      this.#byOrig.set(viewKey(f.origSrc, f.origSport, f.origDst, f.origDport), f);
      this.#byReply.set(viewKey(f.replySrc, f.replySport, f.replyDst, f.replyDport), f);
    }
    this.#unindexed = [];
  }

  /** After a dump: what the dump did not carry is gone (its end was among the dropped events). */
  #finishDump(flows: number): void {
    this.counters.dumps++;
    this.counters.lastDumpFlows = flows;
    if (!this.#dumping) return;
    this.#dumping = false;
    const generation = this.#generation;
    const gone: number[] = [];
    for (const f of this.#active.values()) if (f.seen < generation) gone.push(f.id);
    for (const id of gone) this.#end(id);
  }

  #expireNat(): void {
    if (this.#natEndedHead === this.#natEnded.length) return;
    const oldest = this.#now() - this.#options.natGraceMs;
    while (this.#natEndedHead < this.#natEnded.length && this.#natEnded[this.#natEndedHead].endedMs <= oldest) {
      const f = this.#natEnded[this.#natEndedHead++];
      // A flow whose id came back (re-added) is not this one any more.
      if (this.#nat.get(f.id) !== f) continue;
      this.#nat.delete(f.id);
      const origKey = viewKey(f.origSrc, f.origSport, f.origDst, f.origDport);
      if (this.#byOrig.get(origKey) === f) this.#byOrig.delete(origKey);
      const replyKey = viewKey(f.replySrc, f.replySport, f.replyDst, f.replyDport);
      if (this.#byReply.get(replyKey) === f) this.#byReply.delete(replyKey);
    }
    if (this.#natEndedHead > 1024 && this.#natEndedHead * 2 > this.#natEnded.length) {
      this.#natEnded = this.#natEnded.slice(this.#natEndedHead);
      this.#natEndedHead = 0;
    }
  }
}
