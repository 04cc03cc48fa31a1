/**
 * Picks the live source and switches it, never losing an open connection: the table outlives every
 * source. Policy (Scope's, without its data loss):
 * - eBPF first (unless configured otherwise or refused up front); any load/attach failure falls back at once;
 * - a loss is healed by a /proc reconcile as soon as it stops; a second loss within a minute means
 *   the host produces more than the ring can carry, so /proc takes over at once;
 * - program runs the kernel skipped (BPF recursion protection) are healed the same way, never escalated;
 * - any other death restarts and re-seeds the tracker if the previous death was over a minute ago,
 *   otherwise /proc takes over;
 * - while on /proc, eBPF is retried with a growing back-off.
 */
import { EbpfTracker, type EbpfTrackerHooks, type EbpfTrackerOptions } from "../ebpf/ebpf-tracker.ts";
import { describeError, PluginError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Connection, Direction, SourceKind } from "../model/connection.ts";
import { emptyCounters, type TrackerStatus } from "../model/status.ts";
import type { ConnectionTable } from "../table/connection-table.ts";
import { checkKernel, type KernelFacts } from "./kernel-support.ts";
import { reconcileTable } from "./reconcile.ts";

export type SourceChoice = "auto" | "ebpf" | "procfs";

/** What the supervisor needs of a live tracker; EbpfTracker is the one real implementation. */
export type LiveTracker = Pick<EbpfTracker, "start" | "stop" | "flush" | "counters" | "attachedPrograms" | "eventsReceived" | "heldBack" | "malformedRecords">;
export type TrackerFactory = (table: ConnectionTable, hooks: EbpfTrackerHooks, options: EbpfTrackerOptions) => LiveTracker;

export interface SupervisorOptions {
  source: SourceChoice;
  kernel: KernelFacts;
  ebpf: EbpfTrackerOptions;
  /** Scans /proc (all namespaces) for established connections. */
  scan: () => Promise<readonly Connection[]>;
  heuristic: (localPort: number, remotePort: number) => Direction;
  reconcileIntervalMs: number;
  procPollIntervalMs: number;
  /** A second death or loss within this window is treated as persistent. */
  deathWindowMs: number;
  firstRetryMs: number;
  maxRetryMs: number;
  /** At most one healing reconcile per this interval for skipped program runs. */
  skipHealSpacingMs?: number;
  now?: () => number;
  /** Only tests replace this: the kernel's loss and skip counters cannot be made to move on demand. */
  createTracker?: TrackerFactory;
}

/** Loss in every counter poll for this long means the ring cannot keep up at all. */
const SUSTAINED_LOSS_MS = 10_000;

export const defaultPolicy = {
  reconcileIntervalMs: 60_000,
  procPollIntervalMs: 3_000,
  deathWindowMs: 60_000,
  firstRetryMs: 5 * 60_000,
  maxRetryMs: 60 * 60_000,
  /** A scan of 100k connections costs about a second of CPU: steady skipping must not mean steady scanning. */
  skipHealSpacingMs: 10_000,
};

export class Supervisor {
  readonly #table: ConnectionTable;
  readonly #options: SupervisorOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  #tracker: LiveTracker | undefined;
  #source: SourceKind = "procfs";
  #since: number;
  #reason = "starting";
  #closeSinks = new Set<Set<string>>();
  #scanChain: Promise<unknown> = Promise.resolve();
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
  #counters = emptyCounters();
  /** Totals of trackers already stopped, so restarts do not reset what status reports. */
  #retired = emptyTotals();

  constructor(table: ConnectionTable, options: SupervisorOptions, log: Logger) {
    this.#table = table;
    this.#options = options;
    this.#log = log;
    this.#now = options.now ?? Date.now;
    this.#since = this.#now();
    this.#retryDelayMs = options.firstRetryMs;
  }

  async start(): Promise<void> {
    const { source, kernel } = this.#options;
    if (source === "procfs") return this.#runProcfs("configured: --source procfs");
    const verdict = checkKernel(kernel);
    if (!verdict.supported) {
      const error = new PluginError("ERR_KERNEL_UNSUPPORTED", verdict.reason);
      if (source === "ebpf") throw error;
      return this.#runProcfs(`eBPF refused up front: ${describeError(error)}`);
    }
    try {
      await this.#runEbpf(source === "ebpf" ? "configured: --source ebpf" : `auto: kernel ${kernel.release} supports eBPF`);
    } catch (error) {
      if (source === "ebpf") throw error;
      this.#counters.fallbacks++;
      await this.#runProcfs(`eBPF failed to start, fell back: ${describeError(error)}`);
      this.#scheduleRetry();
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clearTimers();
    this.#stopTracker();
    await this.#scanChain.catch(() => undefined);
  }

  status(): TrackerStatus {
    const tracker = this.#tracker;
    const live = tracker === undefined ? emptyTotals() : trackerTotals(tracker);
    return {
      source: this.#source,
      sinceMs: this.#since,
      reason: this.#reason,
      counters: {
        ...this.#counters,
        events: this.#retired.events + live.events,
        reordersHeldBack: this.#retired.heldBack + live.heldBack,
        failedConnects: this.#retired.failedConnects + live.failedConnects,
        skipped: this.#retired.skipped + live.skipped,
        malformedRecords: this.#retired.malformedRecords + live.malformedRecords,
        connectionsTracked: this.#table.size,
        closesOfUnknown: this.#table.closesOfUnknown,
        evictions: this.#table.evictions,
      },
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
      this.#counters.reconcileAdded += result.added;
      this.#counters.reconcileRemoved += result.removed;
      if (result.added + result.removed > 0) this.#log.info("reconcile corrected the table", { ...result });
    });
  }

  async #runEbpf(reason: string): Promise<void> {
    const create: TrackerFactory = this.#options.createTracker ?? ((table, hooks, options) => new EbpfTracker(table, hooks, options));
    const tracker = create(this.#table, {
      onLost: (count) => this.#onLost(count),
      onSkipped: (count) => this.#onSkipped(count),
      onDead: (error) => void this.#onDeath(describeError(error)),
      onCloseKey: (key) => {
        for (const sink of this.#closeSinks) sink.add(key);
      },
      wantsCloseKeys: () => this.#closeSinks.size > 0,
    }, this.#options.ebpf);
    tracker.start();
    this.#tracker = tracker;
    this.#stopPolling();
    this.#setLive("ebpf", reason);
    // Attached first, seeded second: whatever happens during the scan is seen as an event.
    await this.#serialScan(() => this.#scanAndReconcile());
    this.#log.info("eBPF tracker live", { programs: tracker.attachedPrograms(), reason });
    this.#reconcileTimer = setInterval(() => void this.reconcileNow().catch((e) => this.#log.warn("reconcile failed", { error: describeError(e) })), this.#options.reconcileIntervalMs);
    this.#reconcileTimer.unref?.();
  }

  async #runProcfs(reason: string): Promise<void> {
    this.#stopTracker();
    this.#setLive("procfs", reason);
    this.#log.warn("tracking by /proc scans", { reason });
    await this.#serialScan(() => this.#scanAndReconcile());
    this.#pollTimer = setInterval(() => void this.#serialScan(() => this.#scanAndReconcile()).catch((e) => this.#log.warn("/proc scan failed", { error: describeError(e) })), this.#options.procPollIntervalMs);
    this.#pollTimer.unref?.();
  }

  /**
   * Losses come in episodes: consecutive counter polls that show loss. An episode is healed by one
   * reconcile once it is quiet. A new episode within the death window, or one that never goes quiet,
   * is load the ring cannot carry, not a broken tracker: a restart would lose again, so /proc takes over.
   */
  #onLost(count: number): void {
    this.#counters.lost += count;
    const now = this.#now();
    if (this.#lossEpisode === undefined) {
      const repeated = now - this.#lastLossEpisodeEndMs < this.#options.deathWindowMs;
      this.#log.warn("eBPF events lost", { count, repeated });
      if (repeated) {
        void this.#onDeath(`events lost twice within ${this.#options.deathWindowMs} ms (${count} this time)`, false);
        return;
      }
      this.#lossEpisode = { startMs: now, quietTimer: undefined };
    } else if (now - this.#lossEpisode.startMs > SUSTAINED_LOSS_MS) {
      void this.#onDeath(`events lost without pause for over ${SUSTAINED_LOSS_MS} ms`, false);
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
    void this.reconcileNow().catch((e) => this.#log.warn("healing reconcile failed", { error: describeError(e) }));
  }

  async #onDeath(why: string, restartable = true): Promise<void> {
    if (this.#stopped || this.#tracker === undefined) return;
    this.#stopTracker();
    const now = this.#now();
    const recent = now - this.#lastDeathMs < this.#options.deathWindowMs;
    this.#lastDeathMs = now;
    this.#log.error("eBPF tracker died", { why, recent, restartable });
    if (restartable && !recent) {
      this.#counters.restarts++;
      try {
        await this.#runEbpf(`restarted after death: ${why}`);
        return;
      } catch (error) {
        why = `${why}; restart failed: ${describeError(error)}`;
      }
    } else if (recent) {
      why = `died twice within ${this.#options.deathWindowMs} ms: ${why}`;
    }
    if (this.#options.source === "ebpf") {
      this.#setLive("ebpf", `eBPF required but down, retrying: ${why}`);
      this.#scheduleRetry();
      return;
    }
    this.#counters.fallbacks++;
    await this.#runProcfs(`fell back from eBPF: ${why}`);
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    if (this.#stopped) return;
    const delay = this.#retryDelayMs;
    this.#retryDelayMs = Math.min(this.#retryDelayMs * 2, this.#options.maxRetryMs);
    this.#retryTimer = setTimeout(async () => {
      try {
        await this.#runEbpf(`eBPF retried after ${delay} ms back-off and came back`);
        this.#retryDelayMs = this.#options.firstRetryMs;
      } catch (error) {
        this.#log.warn("eBPF retry failed", { error: describeError(error), nextRetryMs: this.#retryDelayMs });
        this.#reason = `${this.#reason.split("; last retry")[0]}; last retry failed: ${describeError(error)}`;
        this.#scheduleRetry();
      }
    }, delay);
    this.#retryTimer.unref?.();
  }

  async #scanAndReconcile() {
    const closed = new Set<string>();
    this.#closeSinks.add(closed);
    try {
      const keysBefore = new Set(this.#table.keys());
      const scanned = await this.#options.scan();
      await this.#settleEvents();
      return reconcileTable(this.#table, { scanned, keysBefore, closedDuringScan: closed, heuristic: this.#options.heuristic });
    } finally {
      this.#closeSinks.delete(closed);
    }
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
    tracker.stop();
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

/** A tracker's share of the status counters; the supervisor keeps the sum of stopped trackers'. */
type TrackerTotals = ReturnType<typeof emptyTotals>;

function emptyTotals() {
  return { events: 0, heldBack: 0, failedConnects: 0, skipped: 0, malformedRecords: 0 };
}

function trackerTotals(tracker: LiveTracker): TrackerTotals {
  const counters = tracker.counters();
  return { events: tracker.eventsReceived, heldBack: tracker.heldBack, failedConnects: counters.failedConnects, skipped: counters.missed, malformedRecords: tracker.malformedRecords };
}
