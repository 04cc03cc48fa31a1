/**
 * Picks the live source and switches it, never losing an open connection: the table outlives every
 * source. Policy (Scope's, without its data loss):
 * - eBPF first (unless configured otherwise or refused up front); any load/attach failure falls back at once;
 * - a loss is healed by a /proc reconcile as soon as it stops; a second loss within a minute means
 *   the host produces more than the ring can carry, so /proc takes over at once;
 * - program runs the kernel skipped (BPF recursion protection) are healed the same way, never escalated;
 * - any other death restarts and re-seeds the tracker if the previous death was over a minute ago,
 *   otherwise /proc takes over;
 * - while on /proc, eBPF is retried with a growing back-off;
 * - with --source ebpf there is no fallback, but there is no freeze either: while the tracker is
 *   down /proc scans keep the table honest (status says so) and eBPF is restarted within seconds;
 * - a scan that failed, or did not read a namespace in full, never closes what it did not see.
 */
import { EbpfTracker, type EbpfTrackerHooks, type EbpfTrackerOptions } from "../ebpf/ebpf-tracker.ts";
import { describeError, errorCode, PluginError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type Connection, connectionKey, type Direction, type SourceKind } from "../model/connection.ts";
import { emptyCounters, type TrackerStatus } from "../model/status.ts";
import type { ConnectionTable } from "../table/connection-table.ts";
import { checkKernel, type KernelFacts } from "./kernel-support.ts";
import { setImmediate as nextTurn } from "node:timers/promises";
import { reconcileTable } from "./reconcile.ts";

export type SourceChoice = "auto" | "ebpf" | "procfs";

/** What the supervisor needs of a live tracker; EbpfTracker is the one real implementation. */
export type LiveTracker = Pick<EbpfTracker, "start" | "stop" | "flush" | "counters" | "attachedPrograms" | "eventsReceived" | "heldBack" | "malformedRecords">
  & Partial<Pick<EbpfTracker, "lateEvents" | "badSizeRecords" | "attachments">>;

/** What a /proc (or other) scan found, and which namespaces it can vouch for. */
export interface ScanOutcome {
  connections: readonly Connection[];
  /** Reads that failed (not a process vanishing). */
  errors?: number;
  /** Whether the scan read every connection of this namespace; absent: it read them all. */
  readInFull?: (netns: number) => boolean;
  /** The scan found the table exactly as the kernel has it (and built no connection): nothing to reconcile. */
  confirmed?: boolean;
  /**
   * Which of the table's connections the scan speaks for; absent: all of them. The others it found
   * exactly as the table has them (by digest), so they are neither compared nor closed.
   */
  compares?: (connection: Connection) => boolean;
}
export type Scanner = (signal: AbortSignal) => Promise<readonly Connection[] | ScanOutcome>;
export type TrackerFactory = (table: ConnectionTable, hooks: EbpfTrackerHooks, options: EbpfTrackerOptions) => LiveTracker;

export interface SupervisorOptions {
  source: SourceChoice;
  kernel: KernelFacts;
  ebpf: EbpfTrackerOptions;
  /** Scans /proc (all namespaces) for established connections; `signal` abandons it (stop). */
  scan: Scanner;
  heuristic: (localPort: number, remotePort: number) => Direction;
  reconcileIntervalMs: number;
  procPollIntervalMs: number;
  /** A second death or loss within this window is treated as persistent. */
  deathWindowMs: number;
  firstRetryMs: number;
  maxRetryMs: number;
  /** --source ebpf: restart back-off after a death (short: nothing else will bring eBPF back). */
  requiredRetryFirstMs?: number;
  requiredRetryMaxMs?: number;
  /** Loss in every counter poll for this long means the ring cannot keep up at all. */
  sustainedLossMs?: number;
  /** Which fd walk /proc scans use and why, for status. */
  fdWalk?: () => string;
  /** At most one healing reconcile per this interval for skipped program runs. */
  skipHealSpacingMs?: number;
  now?: () => number;
  /** Only tests replace this: the kernel's loss and skip counters cannot be made to move on demand. */
  createTracker?: TrackerFactory;
}

export const defaultPolicy = {
  reconcileIntervalMs: 60_000,
  procPollIntervalMs: 3_000,
  deathWindowMs: 60_000,
  firstRetryMs: 5 * 60_000,
  maxRetryMs: 60 * 60_000,
  /** A scan of 100k connections costs about a second of CPU: steady skipping must not mean steady scanning. */
  skipHealSpacingMs: 10_000,
  requiredRetryFirstMs: 1_000,
  requiredRetryMaxMs: 30_000,
  sustainedLossMs: 10_000,
};

export class Supervisor {
  readonly #table: ConnectionTable;
  readonly #options: SupervisorOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  #tracker: LiveTracker | undefined;
  /** When the live tracker started: a death after deathWindowMs of life resets the retry back-off. */
  #trackerStartedMs = 0;
  #source: SourceKind = "procfs";
  #since: number;
  #reason = "starting";
  #closeSinks = new Set<Set<string>>();
  #scanChain: Promise<unknown> = Promise.resolve();
  /** Aborted by stop(): a scan in flight is abandoned, not waited for. */
  readonly #stopSignal = new AbortController();
  #reconcileTimer: ReturnType<typeof setInterval> | undefined;
  #pollTimer: ReturnType<typeof setInterval> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #retryDelayMs: number;
  #lastDeathMs = Number.NEGATIVE_INFINITY;
  #lossEpisode: { startMs: number; quietTimer: ReturnType<typeof setTimeout> | undefined } | undefined;
  #lastLossEpisodeEndMs = Number.NEGATIVE_INFINITY;
  #skipHealTimer: ReturnType<typeof setTimeout> | undefined;
  #lastSkipHealMs = Number.NEGATIVE_INFINITY;
  #stopped = false;
  /** The tracker being seeded: a death meanwhile fails that start instead of running the death policy beside it. */
  #seeding: { tracker: LiveTracker; death: string | undefined } | undefined;
  #counters = emptyCounters();
  /** Totals of trackers already stopped, so restarts do not reset what status reports. */
  #retired = emptyTotals();

  constructor(table: ConnectionTable, options: SupervisorOptions, log: Logger) {
    this.#table = table;
    this.#options = options;
    this.#log = log;
    this.#now = options.now ?? Date.now;
    this.#since = this.#now();
    this.#retryDelayMs = this.#firstRetryMs();
  }

  async start(): Promise<void> {
    const { source, kernel } = this.#options;
    if (source === "procfs") return this.#runProcfs("configured: --source procfs", true);
    const verdict = checkKernel(kernel);
    if (!verdict.supported) {
      const error = new PluginError("ERR_KERNEL_UNSUPPORTED", verdict.reason);
      if (source === "ebpf") throw error;
      return this.#runProcfs(`eBPF refused up front: ${describeError(error)}`, true);
    }
    try {
      await this.#runEbpf(source === "ebpf" ? "configured: --source ebpf" : `auto: kernel ${kernel.release} supports eBPF`);
    } catch (error) {
      if (source === "ebpf" || this.#stopped) throw error;
      this.#counters.fallbacks++;
      await this.#runProcfs(`eBPF failed to start, fell back: ${describeError(error)}`, true);
      this.#scheduleRetry();
    }
  }

  /** Bounded: a scan in flight is abandoned (its result thrown away), not awaited to its end. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stopSignal.abort(new PluginError("ERR_STOPPED", "the supervisor is stopping"));
    this.#clearTimers();
    this.#stopTracker();
    await this.#scanChain.catch(() => undefined);
  }

  status(): TrackerStatus {
    const tracker = this.#tracker;
    const live = tracker === undefined ? emptyTotals() : trackerTotals(tracker);
    const sum = (name: keyof TrackerTotals) => this.#retired[name] + live[name];
    return {
      source: this.#source,
      sinceMs: this.#since,
      reason: this.#reason,
      counters: {
        ...this.#counters,
        events: sum("events"),
        reordersHeldBack: sum("heldBack"),
        failedConnects: sum("failedConnects"),
        skipped: sum("skipped"),
        backstopped: sum("backstopped"),
        malformedRecords: sum("malformedRecords"),
        badSizeRecords: sum("badSizeRecords"),
        acceptNoSock: sum("acceptNoSock"),
        connectNoPid: sum("connectNoPid"),
        lateEvents: sum("lateEvents"),
        connectionsTracked: this.#table.size,
        closesOfUnknown: this.#table.closesOfUnknown,
        evictions: this.#table.evictions,
      },
      ...(this.#options.fdWalk === undefined ? {} : { fdWalk: this.#options.fdWalk() }),
      ...(this.#source === "ebpf" && tracker?.attachments !== undefined ? { attachments: tracker.attachments() } : {}),
    };
  }

  /** A tracker is attached (live, or being seeded): the scans may then come from the kernel's own view. */
  get trackerAttached(): boolean {
    return this.#tracker !== undefined;
  }

  /** Runs one /proc reconcile now (also what the periodic timer and loss healing do). */
  reconcileNow(): Promise<void> {
    return this.#serialScan(async () => {
      const result = await this.#scanAndReconcile();
      this.#counters.reconciles++;
      this.#counters.reconcileAdded += result.added;
      this.#counters.reconcileRemoved += result.removed;
      if (result.added + result.removed > 0) this.#log.info("reconcile corrected the table", { ...result });
    });
  }

  /**
   * Starts a tracker and seeds the table from a scan. Whatever fails after the tracker started
   * stops it again: a half-started tracker must not stay attached, unmanaged, beside the next one.
   */
  async #runEbpf(reason: string): Promise<void> {
    if (this.#stopped) throw new PluginError("ERR_STOPPED", "the supervisor is stopping");
    this.#stopTracker();
    const create: TrackerFactory = this.#options.createTracker ?? ((table, hooks, options) => new EbpfTracker(table, hooks, options));
    const tracker = create(this.#table, {
      onLost: (count) => this.#onLost(count),
      onSkipped: (count) => this.#onSkipped(count),
      onDead: (error) => this.#handleDeath(tracker, describeError(error), errorCode(error) !== "ERR_TRACKER_MISMATCH"),
      onInternalError: (what, error) => this.#internalError(`tracker hook ${what} threw`, error),
      onCloseKey: (key) => {
        for (const sink of this.#closeSinks) sink.add(key);
      },
      wantsCloseKeys: () => this.#closeSinks.size > 0,
    }, this.#options.ebpf);
    tracker.start();
    this.#tracker = tracker;
    this.#trackerStartedMs = this.#now();
    this.#seeding = { tracker, death: undefined };
    try {
      // Attached first, seeded second: whatever happens during the scan is seen as an event.
      await this.#serialScan(() => this.#scanAndReconcile());
      if (this.#stopped) throw new PluginError("ERR_STOPPED", "the supervisor stopped while seeding");
      const death = this.#seeding.death;
      // Died while seeding: this start failed, with the death's own reason (the caller decides what next).
      if (death !== undefined) throw new StartDeath(death);
    } catch (error) {
      if (this.#tracker === tracker) this.#stopTracker();
      throw error;
    } finally {
      this.#seeding = undefined;
    }
    this.#stopPolling();
    this.#setLive("ebpf", reason);
    this.#log.info("eBPF tracker live", { programs: tracker.attachedPrograms(), attachments: tracker.attachments?.(), reason });
    this.#reconcileTimer = setInterval(() => void this.reconcileNow().catch((e) => this.#scanFailed("reconcile", e)), this.#options.reconcileIntervalMs);
    this.#reconcileTimer.unref?.();
  }

  /** `atStart`: a first scan that fails is a configuration error (an unlistable proc root) and rejects. */
  async #runProcfs(reason: string, atStart = false): Promise<void> {
    this.#stopTracker();
    this.#setLive("procfs", reason);
    this.#log.warn("tracking by /proc scans", { reason });
    clearInterval(this.#pollTimer);
    this.#pollTimer = setInterval(() => void this.#serialScan(() => this.#scanAndReconcile()).catch((e) => this.#scanFailed("/proc poll", e)), this.#options.procPollIntervalMs);
    this.#pollTimer.unref?.();
    try {
      await this.#serialScan(() => this.#scanAndReconcile());
    } catch (error) {
      if (atStart) {
        this.#stopPolling();
        throw error;
      }
      // The polls go on: one failed scan is not a reason to leave the table unwatched.
      this.#scanFailed("/proc scan", error);
    }
  }

  /**
   * Losses come in episodes: consecutive counter polls that show loss. An episode is healed by one
   * reconcile once it is quiet. A new episode within the death window, or one that never goes quiet,
   * is load the ring cannot carry, not a broken tracker: a restart would lose again, so /proc takes over.
   */
  #onLost(count: number): void {
    this.#counters.lost += count;
    const now = this.#now();
    const sustainedMs = this.#options.sustainedLossMs ?? defaultPolicy.sustainedLossMs;
    if (this.#lossEpisode === undefined) {
      const repeated = now - this.#lastLossEpisodeEndMs < this.#options.deathWindowMs;
      this.#log.warn("eBPF events lost", { count, repeated });
      if (repeated) {
        this.#handleDeath(this.#tracker, `events lost twice within ${this.#options.deathWindowMs} ms (${count} this time)`, false);
        return;
      }
      this.#lossEpisode = { startMs: now, quietTimer: undefined };
    } else if (now - this.#lossEpisode.startMs > sustainedMs) {
      this.#handleDeath(this.#tracker, `events lost without pause for over ${sustainedMs} ms`, false);
      return;
    }
    const episode = this.#lossEpisode;
    clearTimeout(episode.quietTimer);
    episode.quietTimer = setTimeout(() => {
      this.#lossEpisode = undefined;
      this.#lastLossEpisodeEndMs = this.#now();
      this.#heal();
    }, this.#quietAfterMs());
    episode.quietTimer.unref?.();
  }

  /**
   * Skipped runs are healed like a loss episode, but never escalate: they come from BPF programs
   * nesting on one CPU, not from a reader that cannot keep up, so a restart or /proc (which misses
   * every short-lived connection) would only make things worse. Heals are spaced: steady skipping
   * costs one scan per skipHealSpacingMs.
   */
  #onSkipped(count: number): void {
    if (this.#skipHealTimer !== undefined) return;
    const now = this.#now();
    const delayMs = Math.max(this.#quietAfterMs(), this.#lastSkipHealMs + (this.#options.skipHealSpacingMs ?? defaultPolicy.skipHealSpacingMs) - now);
    this.#log.warn("eBPF program runs skipped by the kernel (another BPF program was running on that CPU); a reconcile heals them", { count, healInMs: Math.round(delayMs) });
    this.#skipHealTimer = setTimeout(() => {
      this.#skipHealTimer = undefined;
      this.#lastSkipHealMs = this.#now();
      this.#heal();
    }, delayMs);
    this.#skipHealTimer.unref?.();
  }

  /** One counter poll and a half: a poll without news after this means the kernel stopped dropping. */
  #quietAfterMs(): number {
    return 1.5 * (this.#options.ebpf.counterPollMs ?? 1000);
  }

  #heal(): void {
    void this.reconcileNow().catch((e) => this.#scanFailed("healing reconcile", e));
  }

  /** Every death goes through here: a rejection of the policy below is logged and counted, never unhandled. */
  #handleDeath(tracker: LiveTracker | undefined, why: string, restartable = true): void {
    // A death reported by a tracker that is no longer the live one (stopped meanwhile) changes nothing.
    if (tracker === undefined || tracker !== this.#tracker) return;
    if (this.#seeding?.tracker === tracker) {
      this.#seeding.death ??= why;
      return;
    }
    this.#onDeath(why, restartable).catch((error) => this.#internalError("handling a tracker death failed", error));
  }

  async #onDeath(why: string, restartable: boolean): Promise<void> {
    if (this.#stopped || this.#tracker === undefined) return;
    this.#stopTracker();
    const now = this.#now();
    const recent = now - this.#lastDeathMs < this.#options.deathWindowMs;
    // A tracker that lived through a whole window earned a fresh back-off.
    if (now - this.#trackerStartedMs >= this.#options.deathWindowMs) this.#retryDelayMs = this.#firstRetryMs();
    this.#lastDeathMs = now;
    this.#log.error("eBPF tracker died", { why, recent, restartable });
    if (restartable && !recent) {
      try {
        await this.#runEbpf(`restarted after death: ${why}`);
        this.#counters.restarts++;
        return;
      } catch (error) {
        if (this.#stopped) return;
        why = `${why}; restart failed: ${describeError(error)}`;
      }
    } else if (recent) {
      why = `died twice within ${this.#options.deathWindowMs} ms: ${why}`;
    }
    if (this.#options.source === "ebpf") {
      // No fallback was asked for, but a frozen table is worse than a /proc-fed one: scans keep it
      // honest (closes included) until the tracker is back, and status says exactly that.
      await this.#runProcfs(`eBPF required (--source ebpf) but down, /proc scans keep the table until it is back (next restart in ${this.#retryDelayMs} ms): ${why}`);
      this.#scheduleRetry();
      return;
    }
    this.#counters.fallbacks++;
    await this.#runProcfs(`fell back from eBPF: ${why}`);
    this.#scheduleRetry();
  }

  #firstRetryMs(): number {
    return this.#options.source === "ebpf" ? this.#options.requiredRetryFirstMs ?? defaultPolicy.requiredRetryFirstMs : this.#options.firstRetryMs;
  }

  #maxRetryMs(): number {
    return this.#options.source === "ebpf" ? this.#options.requiredRetryMaxMs ?? defaultPolicy.requiredRetryMaxMs : this.#options.maxRetryMs;
  }

  #scheduleRetry(): void {
    if (this.#stopped) return;
    const delay = this.#retryDelayMs;
    this.#retryDelayMs = Math.min(this.#retryDelayMs * 2, this.#maxRetryMs());
    this.#log.info("eBPF retry scheduled", { inMs: delay });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#retry(delay).catch((error) => this.#internalError("an eBPF retry failed unexpectedly", error));
    }, delay);
    this.#retryTimer.unref?.();
  }

  async #retry(delay: number): Promise<void> {
    try {
      await this.#runEbpf(`eBPF retried after ${delay} ms back-off and came back`);
      if (this.#options.source === "ebpf") this.#counters.restarts++;
    } catch (error) {
      if (this.#stopped) return;
      this.#log.warn("eBPF retry failed", { error: describeError(error), nextRetryMs: this.#retryDelayMs });
      this.#reason = `${this.#reason.split("; last retry")[0]}; last retry failed: ${describeError(error)}`;
      this.#scheduleRetry();
    }
  }

  async #scanAndReconcile() {
    const closed = new Set<string>();
    const opened = new Set<string>();
    this.#closeSinks.add(closed);
    // Only events open what a scan may have missed; the reconcile's own opens (scan connections)
    // are in its scan, and keying them again would double its work at a large seed.
    const unsubscribe = this.#table.subscribe((change) => {
      if (change.type === "open" && change.connection.source === "ebpf") opened.add(connectionKey(change.connection));
    });
    const signal = this.#stopSignal.signal;
    try {
      const outcome = await this.#scan();
      if (outcome.confirmed === true) {
        this.#counters.reconcilesConfirmed++;
        return { added: 0, removed: 0, suppressed: 0, kept: 0, updated: 0 };
      }
      if (outcome.compares !== undefined) this.#counters.reconcilesPartial++;
      await this.#settleEvents();
      signal.throwIfAborted();
      const result = await reconcileTable(this.#table, {
        scanned: outcome.connections, openedDuringScan: opened, closedDuringScan: closed, heuristic: this.#options.heuristic, readInFull: outcome.readInFull, compares: outcome.compares,
        breathe: async () => {
          await nextTurn();
          signal.throwIfAborted();
        },
      });
      this.#counters.reconcileKept += result.kept;
      if (result.kept > 0) this.#log.warn("kept connections a failed /proc read could not confirm", { kept: result.kept, scanErrors: outcome.errors ?? 0 });
      return result;
    } finally {
      this.#closeSinks.delete(closed);
      unsubscribe();
    }
  }

  /** One scan, its read errors counted; a scan that rejects changes nothing and is counted by the caller. */
  async #scan(): Promise<ScanOutcome> {
    const scanned = await this.#options.scan(this.#stopSignal.signal);
    const outcome: ScanOutcome = Array.isArray(scanned) ? { connections: scanned } : scanned as ScanOutcome;
    if ((outcome.errors ?? 0) > 0) {
      this.#counters.scanErrors += outcome.errors!;
      this.#log.warn("/proc scan had read errors", { errors: outcome.errors });
    }
    return outcome;
  }

  #scanFailed(what: string, error: unknown): void {
    if (this.#stopped) return;
    this.#counters.scanFailures++;
    this.#log.warn(`${what} failed, the table is left as it was`, { error: describeError(error) });
  }

  #internalError(what: string, error: unknown): void {
    this.#counters.internalErrors++;
    this.#log.error(what, { error: describeError(error) });
  }

  /** Lets every event the kernel produced before the scan ended reach the table. */
  async #settleEvents(): Promise<void> {
    const tracker = this.#tracker;
    if (tracker === undefined) return;
    const drain = this.#options.ebpf.drainIntervalMs ?? 20;
    await new Promise((resolve) => setTimeout(resolve, 2 * drain + 5));
    tracker.flush();
  }

  #serialScan<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#scanChain.catch(() => undefined).then(work);
    this.#scanChain = next;
    return next;
  }

  #setLive(source: SourceKind, reason: string): void {
    if (source !== this.#source || reason !== this.#reason) this.#since = this.#now();
    this.#source = source;
    this.#reason = reason;
  }

  #stopTracker(): void {
    clearInterval(this.#reconcileTimer);
    this.#reconcileTimer = undefined;
    clearTimeout(this.#lossEpisode?.quietTimer);
    this.#lossEpisode = undefined;
    clearTimeout(this.#skipHealTimer);
    this.#skipHealTimer = undefined;
    const tracker = this.#tracker;
    if (tracker === undefined) return;
    this.#tracker = undefined;
    try {
      tracker.stop();
    } catch (error) {
      this.#internalError("stopping the tracker failed", error);
    }
    const totals = trackerTotals(tracker);
    for (const name of Object.keys(totals) as Array<keyof TrackerTotals>) this.#retired[name] += totals[name];
  }

  #stopPolling(): void {
    clearInterval(this.#pollTimer);
    this.#pollTimer = undefined;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  #clearTimers(): void {
    this.#stopPolling();
    clearInterval(this.#reconcileTimer);
  }
}

/** A tracker that died while its start was seeding the table: the reason is the death's, verbatim. */
class StartDeath extends Error {
  readonly code = "ERR_TRACKER_DEAD";
  constructor(why: string) {
    super(`died while seeding: ${why}`);
  }
}

/** A tracker's share of the status counters; the supervisor keeps the sum of stopped trackers'. */
type TrackerTotals = ReturnType<typeof emptyTotals>;

function emptyTotals() {
  return { events: 0, heldBack: 0, failedConnects: 0, skipped: 0, backstopped: 0, malformedRecords: 0, badSizeRecords: 0, acceptNoSock: 0, connectNoPid: 0, lateEvents: 0 };
}

function trackerTotals(tracker: LiveTracker): TrackerTotals {
  const counters = tracker.counters();
  return {
    events: tracker.eventsReceived, heldBack: tracker.heldBack, failedConnects: counters.failedConnects, skipped: counters.missed,
    backstopped: counters.backstop ?? 0,
    malformedRecords: tracker.malformedRecords, badSizeRecords: tracker.badSizeRecords ?? counters.badSizeRecords ?? 0,
    acceptNoSock: counters.acceptNoSock, connectNoPid: counters.connectNoPid, lateEvents: tracker.lateEvents ?? 0,
  };
}
