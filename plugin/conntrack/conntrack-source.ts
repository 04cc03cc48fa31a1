/**
 * The conntrack source: the addon's ctnetlink reader (a dump at start and after every lost-event
 * signal, then events) feeding a FlowTable, in the network namespace the plugin runs in, as
 * Scope's probe does. Optional: on a host without conntrack (no CAP_NET_ADMIN, no nf_conntrack,
 * events switched off) everything else works and the status says that NAT mapping is off and why.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describeError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { loadNativeAddon } from "../ebpf/native-addon.ts";
import { FlowTable, type FlowTableCounters, type FlowTableOptions } from "./flow-table.ts";
import type { ProcfsConntrackCounters } from "./procfs-conntrack.ts";

export interface NativeConntrackCounters {
  enobufs: number;
  dumps: number;
  malformed: number;
  records: number;
}

export interface NativeConntrack {
  counters(): NativeConntrackCounters;
  requestDump(): void;
  /** Subscribe to UPDATE events too (the ones that end a connection are kept), or stop. */
  setUpdates(on: boolean): void;
  stop(): void;
}

export interface NativeConntrackOptions {
  onBatch: (batch: Uint8Array) => void;
  onError: (error: Error) => void;
  receiveBufferBytes?: number;
  drainIntervalMs?: number;
  /** Batches queued for JS before the reader stops reading (64 by default). */
  maxQueuedBatches?: number;
}

export interface ConntrackStatus {
  /** NAT mapping (and the /proc fallback's use of conntrack) is on. */
  enabled: boolean;
  /** Why it is on or off. */
  reason: string;
  counters: FlowTableCounters & Partial<ProcfsConntrackCounters>;
}

export interface ConntrackSourceOptions {
  procRoot: string;
  receiveBufferBytes?: number;
  drainIntervalMs?: number;
  maxQueuedBatches?: number;
  /** After a runtime failure, try again this much later. */
  retryMs: number;
  flows?: Partial<FlowTableOptions>;
  /** Tests and benchmarks only: turn the source off without touching the host. */
  disabled?: string;
  createNative?: (options: NativeConntrackOptions) => NativeConntrack;
}

/** Why the kernel said no, in words an operator can act on. */
export function explainConntrackError(error: unknown): string {
  const errnum = (error as { errno?: number }).errno;
  const what = describeError(error);
  if (errnum === 1) return `no permission to read conntrack (ctnetlink needs CAP_NET_ADMIN in this network namespace): ${what}`;
  if (errnum === 93 || errnum === 97) return `conntrack netlink is not available in this kernel (nf_conntrack_netlink not built or loaded): ${what}`;
  return what;
}

export class ConntrackSource {
  readonly flows: FlowTable;
  readonly #options: ConntrackSourceOptions;
  readonly #log: Logger;
  #native: NativeConntrack | undefined;
  #enabled = false;
  #reason = "not started";
  #retry: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #listeners = new Set<() => void>();

  constructor(options: ConntrackSourceOptions, log: Logger) {
    this.#options = options;
    this.#log = log;
    this.flows = new FlowTable(options.flows);
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * What the /proc fallback needs: untranslated flows kept too (FlowTable.keepAll; turning it on
   * reads the table again) and connection ends as they happen (UPDATE events: DESTROY comes only
   * after TIME_WAIT, two minutes by default). With eBPF live neither is needed: NEW and DESTROY
   * of NATed flows are all Scope's NAT mapping uses, and UPDATEs are several per connection.
   */
  setKeepAll(keepAll: boolean): void {
    if (keepAll === this.flows.keepAll) return;
    this.flows.keepAll = keepAll;
    try {
      this.#native?.setUpdates(keepAll);
    } catch (error) {
      this.#log.warn("conntrack UPDATE events could not be switched", { error: describeError(error), on: keepAll });
    }
    if (keepAll) this.#native?.requestDump();
  }

  /** Called after every applied batch (the report cache rebuilds on NAT changes). */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  start(): void {
    if (this.#stopped || this.#native !== undefined) return;
    const refusal = this.#options.disabled ?? this.#refusal();
    if (refusal !== undefined) return this.#off(refusal, false);
    try {
      const create = this.#options.createNative ?? ((o: NativeConntrackOptions) => new (loadNativeAddon().Conntrack)(o));
      this.#native = create({
        onBatch: (batch) => this.#onBatch(batch),
        onError: (error) => this.#off(`conntrack reader failed: ${explainConntrackError(error)}`, true),
        receiveBufferBytes: this.#options.receiveBufferBytes,
        drainIntervalMs: this.#options.drainIntervalMs,
        maxQueuedBatches: this.#options.maxQueuedBatches,
      });
      // A reader started again (after a failure) for the /proc fallback needs the UPDATEs again.
      if (this.flows.keepAll) this.#native.setUpdates(true);
      this.#enabled = true;
      this.#reason = "conntrack events and dumps of this network namespace (ctnetlink)";
      this.#log.info("conntrack NAT mapping on", { reason: this.#reason });
    } catch (error) {
      this.#off(explainConntrackError(error), false);
    }
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
    this.#native?.stop();
    this.#native = undefined;
    this.#enabled = false;
    this.flows.clear();
  }

  status(): ConntrackStatus {
    const native = this.#native?.counters();
    if (native !== undefined) this.flows.counters.malformedRecords = Math.max(this.flows.counters.malformedRecords, native.malformed);
    return { enabled: this.#enabled, reason: this.#enabled ? this.#reason : `NAT mapping off: ${this.#reason}`, counters: { ...this.flows.counters } };
  }

  /** Scope's IsConntrackSupported: the sysctl must exist (nf_conntrack present) and events must not be off. */
  #refusal(): string | undefined {
    const path = join(this.#options.procRoot, "sys/net/netfilter/nf_conntrack_events");
    let text: string;
    try {
      text = readFileSync(path, "utf8").trim();
    } catch (error) {
      return `conntrack is not available (nf_conntrack not loaded?): cannot read ${path}: ${describeError(error)}`;
    }
    if (text === "0") return `conntrack events are disabled (${path} is 0; net.netfilter.nf_conntrack_events=1 or 2 turns them on)`;
    return undefined;
  }

  #onBatch(batch: Uint8Array): void {
    const lostBefore = this.flows.counters.lostEvents;
    this.flows.apply(batch);
    if (this.flows.counters.lostEvents !== lostBefore) {
      this.#log.warn("conntrack events lost (ENOBUFS); reading the table again", { lostEvents: this.flows.counters.lostEvents });
    }
    for (const listener of this.#listeners) listener();
  }

  #off(reason: string, retry: boolean): void {
    this.#native?.stop();
    this.#native = undefined;
    this.#enabled = false;
    this.#reason = reason;
    this.flows.clear();
    this.#log.warn("conntrack NAT mapping off", { reason });
    if (!retry || this.#stopped) return;
    this.#log.info("conntrack will be tried again", { inMs: this.#options.retryMs });
    this.#retry = setTimeout(() => this.start(), this.#options.retryMs);
    this.#retry.unref?.();
  }
}
