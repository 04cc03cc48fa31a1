/**
 * The live eBPF tracker: native reader -> decoder -> hold-back window -> table. It reports, and never
 * decides: losses and death go to the supervisor, which owns the restart/fallback policy.
 */
import { PluginError } from "../errors.ts";
import type { ProgramAttachment } from "../model/status.ts";
import type { ConnectionTable } from "../table/connection-table.ts";
import { EventApplier } from "./event-applier.ts";
import { defaultObjectPath, loadNativeAddon, type NativeCounters, type NativeTracker } from "./native-addon.ts";
import { EVENT_SIZE } from "./record.ts";
import { type ReleasedRecords, ReorderBuffer } from "./reorder-buffer.ts";
import { existsSync, rmSync } from "node:fs";

export interface EbpfTrackerOptions {
  objectPath?: string;
  addonPath?: string;
  ringBufferBytes?: number;
  drainIntervalMs?: number;
  holdBackMs?: number;
  wakeup?: boolean;
  /** Never try tp_btf (see NativeTrackerOptions.tracepointsOnly). */
  tracepointsOnly?: boolean;
  /** How often the kernel's loss counters are read. */
  counterPollMs?: number;
  /** Debug only, off by default: when this file appears the tracker declares itself dead and removes it. */
  debugKillFile?: string;
}

export interface EbpfTrackerHooks {
  /** `count` events the kernel could not deliver since the last poll: the ring buffer was full. */
  onLost(count: number): void;
  /**
   * `count` runs of our programs the kernel skipped since the last poll because another BPF program
   * was running on that CPU (a softirq landing inside a run). A few a minute is normal under churn
   * and says nothing about whether the reader keeps up, so the supervisor heals them, never escalates.
   */
  onSkipped(count: number): void;
  /** The tracker is dead (stopped reading); an error coded ERR_TRACKER_MISMATCH would die again on restart. */
  onDead(error: Error): void;
  /** A failure inside a hook called from a timer (it must not become an uncaught exception). */
  onInternalError?(what: string, error: unknown): void;
  /** Every close the tracker applied, by key, known or not: lets a /proc scan drop seeds that died meanwhile. */
  onCloseKey?(key: string): void;
  /** Whether onCloseKey wants keys right now (only while a scan runs): short-lived pairs, which build no key, form only when not. */
  wantsCloseKeys?(): boolean;
}

export class EbpfTracker {
  readonly #hooks: EbpfTrackerHooks;
  readonly #options: Required<Omit<EbpfTrackerOptions, "debugKillFile" | "addonPath">> & Pick<EbpfTrackerOptions, "debugKillFile" | "addonPath">;
  readonly #reorder: ReorderBuffer;
  readonly #applier: EventApplier;
  #native: NativeTracker | undefined;
  #clock: () => number = () => 0;
  #timers: ReturnType<typeof setInterval>[] = [];
  #applyTimer: ReturnType<typeof setTimeout> | undefined;
  #lastCounters: NativeCounters = { lost: 0, failedConnects: 0, connectNoPid: 0, acceptNoSock: 0, missed: 0, badSizeRecords: 0 };
  #dead = false;
  #attachments: ProgramAttachment[] = [];
  eventsReceived = 0;

  constructor(table: ConnectionTable, hooks: EbpfTrackerHooks, options: EbpfTrackerOptions = {}) {
    this.#hooks = hooks;
    this.#options = {
      objectPath: options.objectPath ?? defaultObjectPath,
      addonPath: options.addonPath,
      ringBufferBytes: options.ringBufferBytes ?? 4 * 1024 * 1024,
      drainIntervalMs: options.drainIntervalMs ?? 20,
      holdBackMs: options.holdBackMs ?? 50,
      wakeup: options.wakeup ?? false,
      tracepointsOnly: options.tracepointsOnly ?? false,
      counterPollMs: options.counterPollMs ?? 1000,
      debugKillFile: options.debugKillFile,
    };
    this.#reorder = new ReorderBuffer(this.#options.holdBackMs);
    this.#applier = new EventApplier(table, {
      orphanCloseTtlMs: 2000,
      onCloseKey: hooks.onCloseKey,
      wantsCloseKeys: hooks.wantsCloseKeys?.bind(hooks),
    });
  }

  get heldBack(): number {
    return this.#reorder.heldBack;
  }

  /** Records of unknown type or family: dropped and counted. */
  get malformedRecords(): number {
    return this.#reorder.malformed;
  }

  /** Records older than one already applied: applied anyway, out of order. */
  get lateEvents(): number {
    return this.#reorder.late;
  }

  /** Records of the wrong size, dropped by the addon or found here in a batch: the tracker dies of the first. */
  get badSizeRecords(): number {
    return (this.#lastCounters.badSizeRecords ?? 0) + this.#reorder.partialBatches;
  }

  /** Loads and attaches; throws the addon's coded error (ERR_BPF_*) when the kernel says no. */
  start(): void {
    if (this.#native !== undefined) return;
    const addon = loadNativeAddon(this.#options.addonPath);
    this.#clock = addon.monotonicNowNs;
    this.#dead = false;
    this.#native = new addon.Tracker({
      objectPath: this.#options.objectPath,
      ringBufferBytes: this.#options.ringBufferBytes,
      drainIntervalMs: this.#options.drainIntervalMs,
      wakeup: this.#options.wakeup,
      tracepointsOnly: this.#options.tracepointsOnly,
      onBatch: (batch) => this.#onBatch(batch),
      onError: (error) => this.#die(new PluginError("ERR_TRACKER_DEAD", `ring-buffer reader failed: ${error.message}`, { cause: error })),
    });
    this.#lastCounters = this.#native.counters();
    this.#attachments = this.#native.attachments();
    this.#timers.push(setInterval(() => this.#pollCounters(), this.#options.counterPollMs));
    for (const timer of this.#timers) timer.unref?.();
  }

  /** Applies everything received so far, whatever its age: used before a /proc comparison. */
  flush(): void {
    this.#applyEvents(this.#reorder.release());
  }

  /** As of the last counter poll (or the stop): reading the maps costs syscalls, and status is read per report. */
  counters(): NativeCounters {
    return this.#lastCounters;
  }

  attachedPrograms(): string[] {
    return this.#native?.attachedPrograms() ?? [];
  }

  /** What serves each hook on this kernel and why, fixed at start (empty when not running). */
  attachments(): ProgramAttachment[] {
    return this.#attachments;
  }

  stop(): void {
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers = [];
    clearTimeout(this.#applyTimer);
    this.#applyTimer = undefined;
    const native = this.#native;
    this.#native = undefined;
    this.#attachments = [];
    if (native !== undefined) {
      try {
        this.#lastCounters = native.counters();
      } catch {
        // Kept as of the last poll: a counters map that cannot be read must not stop the stop.
      }
      native.stop();
    }
    this.flush();
  }

  #onBatch(batch: Uint8Array): void {
    this.eventsReceived += this.#reorder.push(batch);
    this.#armApply();
  }

  /**
   * Records wait in the hold-back window; a timer releases what is due, armed only while some
   * are held, so that an idle host costs no timer every drain interval.
   */
  #armApply(): void {
    if (this.#applyTimer !== undefined || this.#native === undefined || this.#reorder.pending === 0) return;
    this.#applyTimer = setTimeout(() => {
      this.#applyTimer = undefined;
      this.#applyDue();
      this.#armApply();
    }, this.#options.drainIntervalMs);
    this.#applyTimer.unref?.();
  }

  #applyDue(): void {
    this.#applyEvents(this.#reorder.release(this.#clock()));
  }

  #applyEvents(records: ReleasedRecords): void {
    if (records.count === 0) return;
    this.#applier.apply(records);
  }

  #pollCounters(): void {
    if (this.#native === undefined) return;
    let now: NativeCounters;
    try {
      now = this.#native.counters();
    } catch (error) {
      // Without the counters, loss goes unseen: a tracker that cannot say what it missed is dead.
      this.#die(new PluginError("ERR_TRACKER_DEAD", `reading the kernel counters failed: ${(error as Error).message}`, { cause: error }));
      return;
    }
    const lost = now.lost - this.#lastCounters.lost;
    const skipped = now.missed - this.#lastCounters.missed;
    this.#lastCounters = now;
    this.#callHook("onLost", () => lost > 0 && this.#hooks.onLost(lost));
    this.#callHook("onSkipped", () => skipped > 0 && this.#hooks.onSkipped(skipped));
    const badSize = this.badSizeRecords;
    if (badSize > 0) {
      this.#die(new PluginError("ERR_TRACKER_MISMATCH", `${badSize} ring-buffer records of the wrong size (expected ${EVENT_SIZE} bytes): the addon and the BPF object were built from different versions of bpf/tracker.h; rebuild both (bash scripts/setup.sh)`));
      return;
    }
    const killFile = this.#options.debugKillFile;
    if (killFile !== undefined && existsSync(killFile)) {
      rmSync(killFile, { force: true });
      this.#die(new PluginError("ERR_TRACKER_DEAD", `killed on purpose: debug stop file ${killFile} appeared`));
    }
  }

  #die(error: Error): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#callHook("onDead", () => this.#hooks.onDead(error));
  }

  #callHook(what: string, call: () => unknown): void {
    try {
      call();
    } catch (error) {
      if (this.#hooks.onInternalError === undefined) throw error;
      this.#hooks.onInternalError(what, error);
    }
  }
}
