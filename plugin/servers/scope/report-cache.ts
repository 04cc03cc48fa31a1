/**
 * Ready-made report bodies, so that /report answers in microseconds: Scope polls every plugin one
 * after another under one lock with a 500 ms deadline, so a slow plugin delays all of them.
 *
 * Bodies are rebuilt by one job at a time, in steps that let I/O run in between, no more often
 * than `minRebuildIntervalMs` nor than a few times the last build's duration (CPU stays bounded
 * on big tables), only when something changed or the last build is `maxAgeMs` old, and only while
 * someone asks: after `idleAfterMs` without a request nothing is rebuilt (a host without a Scope
 * probe pays nothing for it, and gRPC callers see no rebuild slices).
 *
 * Freshness: a body is served as current only while its snapshot is younger than one rebuild cycle
 * (the rebuild interval plus one build: as old as a body gets while rebuilds keep up), or, when
 * nothing changed since the snapshot, younger than `maxAgeMs` plus one cycle. Otherwise (the first
 * request after start or after a quiet spell) the request waits for a rebuild, up to `staleWaitMs`;
 * if that is not enough (about 100k connections), it gets a stand-in: a valid report with no nodes
 * whose description says why, and the rebuild carries on for the next request. Scope merges reports
 * over a window, so an empty one adds nothing and removes nothing; an old one would bring back
 * connections long closed and lack new ones. A stand-in delivers nothing.
 *
 * Each probe_id is its own backend client ("scope:<probe_id>") and sees every closed connection
 * exactly once: closes pulled for a probe stay pending, one entry per connection, and in every body
 * built for it, until a body built after they were pulled has been sent to it whole (the HTTP
 * response finished; a HEAD, or a body the probe gave up on half-way, delivers nothing). A body
 * holding delivered closes is not served to that probe again: until the rebuild it gets the open
 * connections only. A probe's first request is answered from the shared open-connections body and
 * registers it.
 */
import type { ReportBackend } from "../../model/backend.ts";
import type { Connection } from "../../model/connection.ts";
import type { Logger } from "../../log.ts";
import { EdgeDeriver, runSteps, runStepsAsync } from "./endpoint-topology.ts";
import type { NodeIdContext } from "./node-id.ts";
import { type PluginIdentity, renderScopeReportBody } from "./report-json.ts";

export interface ReportCacheOptions {
  /** Least time between the starts of two rebuilds. */
  minRebuildIntervalMs: number;
  /** Rebuild at least this often even without changes (fresh timestamps, probe expiry). */
  maxAgeMs: number;
  /** A rebuild waits at least this many times the previous build's duration. */
  buildCostFactor: number;
  /** Probes served their own closed connections; later ones get open connections only. */
  maxProbes: number;
  /** A probe that has not asked for this long is forgotten (and its backend client expires). */
  probeExpiryMs: number;
  /** Cap on closed connections held for one probe between two of its requests. */
  maxPendingClosed: number;
  /** Rebuilds stop when nobody asked for this long (Scope probes ask every second). */
  idleAfterMs: number;
  /**
   * A rebuild's slices wait while a body is being written: a 16 MB body leaves in socket-buffer-sized
   * writes, one per event-loop turn, and every rebuild slice in between delayed it (p99 of /report at
   * 100k went from ~50 ms to ~700 ms). Bounded per build by this, so a client that stops reading
   * cannot starve the rebuilds.
   */
  maxWaitForResponsesMs: number;
  /**
   * How long a request whose body is no longer current waits for a rebuild. Scope allows 500 ms for
   * dial, request, response and its own decoding: half for the build, half for the rest.
   */
  staleWaitMs: number;
}

export const DEFAULT_REPORT_CACHE_OPTIONS: ReportCacheOptions = {
  minRebuildIntervalMs: 500,
  maxAgeMs: 5_000,
  buildCostFactor: 4,
  maxProbes: 16,
  probeExpiryMs: 120_000,
  maxPendingClosed: 65_536,
  idleAfterMs: 30_000,
  maxWaitForResponsesMs: 1_000,
  staleWaitMs: 250,
};

/** When a body's snapshot was taken, and the count of changes the table had seen by then. */
interface Stamp {
  atMs: number;
  changeSeq: number;
}

interface Pending {
  connection: Connection;
  /** The build that pulled it from the backend. */
  generation: number;
}

interface ProbeState {
  readonly probeId: string;
  readonly clientId: string;
  registered: boolean;
  body: Buffer | undefined;
  bodyGeneration: number;
  bodyStamp: Stamp | undefined;
  /** The build of every body made for this probe: a body may still be going out after the next build. */
  built: WeakMap<Buffer, number>;
  /** In the order pulled, so in generation order. */
  pending: Pending[];
  /** Closes this probe missed (its bounds overflowed), by the build that found out; told once delivered. */
  dropped: Array<{ count: number; generation: number }>;
  lastRequestMs: number;
}

export class ReportCache {
  readonly #backend: ReportBackend;
  readonly #identity: PluginIdentity;
  readonly #hostId: string;
  readonly #deriver: EdgeDeriver;
  readonly #options: ReportCacheOptions;
  readonly #log?: Logger;
  readonly #now: () => number;
  readonly #probes = new Map<string, ProbeState>();
  #anonymous: Buffer | undefined;
  #anonymousStamp: Stamp | undefined;
  #anonymousServed = true;
  /** Changes that make a body out of date: table changes and delivered closes (not mere age). */
  #changeSeq = 0;
  /** The rebuild a stale request started; later stale requests join it. */
  #staleRebuild: Promise<void> | undefined;
  #lastOpenCount = 0;
  #lastRenderMs = 0;
  #generation = 0;
  #dirty = true;
  #job: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ageTimer: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;
  #lastStartMs = -Infinity;
  #lastDurationMs = 0;
  #warnedFull = false;
  #stopped = false;
  #writing = 0;
  #responsesOut: (() => void) | undefined;
  #waitBudgetMs = 0;
  #lastRequestMs = Number.NEGATIVE_INFINITY;
  /** Bodies rendered so far (for tests and metrics). */
  builds = 0;
  /** Times a rebuild paused for a body being written. */
  waits = 0;

  constructor(backend: ReportBackend, identity: PluginIdentity, ctx: NodeIdContext, options: Partial<ReportCacheOptions> = {}, log?: Logger, now: () => number = Date.now) {
    this.#backend = backend;
    this.#identity = identity;
    this.#hostId = ctx.hostId;
    this.#deriver = new EdgeDeriver(ctx);
    this.#options = { ...DEFAULT_REPORT_CACHE_OPTIONS, ...options };
    this.#log = log;
    this.#now = now;
  }

  /** Builds the first body, then keeps bodies fresh. */
  async start(): Promise<void> {
    this.#unsubscribe ??= this.#backend.subscribe(() => this.#markDirty());
    this.#ageTimer ??= setInterval(() => this.#markDirty(false), this.#options.maxAgeMs);
    this.#ageTimer.unref();
    await this.refresh();
  }

  stop(): void {
    this.#stopped = true;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    clearInterval(this.#ageTimer);
    clearTimeout(this.#timer);
  }

  get probeCount(): number {
    return this.#probes.size;
  }

  /** The body to serve now; never builds anything on this path. */
  bodyFor(probeId: string | undefined): Buffer {
    const wasIdle = this.#idle();
    const now = this.#now();
    this.#lastRequestMs = now;
    if (wasIdle && this.#dirty && this.#job === undefined) this.#schedule();
    const probe = probeId === undefined ? undefined : this.#probes.get(probeId) ?? this.#register(probeId);
    if (probe === undefined || probe.body === undefined) return this.#serveAnonymous();
    probe.lastRequestMs = now;
    return probe.body;
  }

  /** `body` went out whole to `probeId`: what it carried is delivered and not served again. */
  bodySent(probeId: string, body: Buffer): void {
    const probe = this.#probes.get(probeId);
    const generation = probe?.built.get(body);
    if (probe === undefined || generation === undefined) return;
    let n = 0;
    while (n < probe.pending.length && probe.pending[n].generation <= generation) n++;
    const droppedBefore = probe.dropped.length;
    probe.dropped = probe.dropped.filter((d) => d.generation > generation);
    if (n === 0 && probe.dropped.length === droppedBefore) return;
    probe.pending = probe.pending.slice(n);
    // Every body built for it since holds them too: open connections only until the rebuild.
    probe.body = undefined;
    this.#markDirty();
  }

  /** `body` did not go out whole (the probe went away): what it carried stays pending. */
  bodyAbandoned(probeId: string | undefined, body: Buffer): void {
    const probe = probeId === undefined ? undefined : this.#probes.get(probeId);
    if (probe?.built.has(body)) this.#backend.noteScopeBodyUndelivered();
  }

  /**
   * Before bodyFor: undefined when the body bodyFor(probeId) would serve is current; otherwise a
   * rebuild is started (or joined) and the promise resolves once bodyFor has a current body
   * (undefined), or after `staleWaitMs` to a stand-in to serve instead (a report with no nodes).
   */
  awaitCurrent(probeId: string | undefined): Promise<Buffer | undefined> | undefined {
    if (this.#stopped || this.#isCurrent(this.#stampFor(probeId), this.#idle())) return undefined;
    this.#lastRequestMs = this.#now();
    return this.#waitForCurrent(probeId);
  }

  async #waitForCurrent(probeId: string | undefined): Promise<Buffer | undefined> {
    const waitStarted = this.#now();
    // Current for this request: a snapshot that saw every change made before it.
    const seq = this.#changeSeq;
    const sawAll = () => (this.#stampFor(probeId)?.changeSeq ?? -1) >= seq;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), this.#options.staleWaitMs)));
    let failure: unknown;
    const rebuilt = (async () => {
      if (this.#job !== undefined) await this.#job.catch(() => undefined);
      if (sawAll()) return;
      // The anonymous body is rebuilt only when asked for: this request may be the one.
      const probe = probeId === undefined ? undefined : this.#probes.get(probeId);
      if (probe?.body === undefined) this.#anonymousServed = true;
      this.#staleRebuild ??= this.refresh().finally(() => (this.#staleRebuild = undefined));
      await this.#staleRebuild;
    })().catch((error) => void (failure = error));
    const outcome = await Promise.race([rebuilt.then(() => "built" as const), timedOut]);
    clearTimeout(timer);
    if (outcome === "built" && failure === undefined && sawAll()) return undefined;
    const why = failure !== undefined
      ? `building it failed (${failure instanceof Error ? failure.message : String(failure)})`
      : `rebuilding it (${this.#lastOpenCount} open connections; the last build took ${Math.round(this.#lastRenderMs)} ms) takes longer than ${this.#options.staleWaitMs} ms`;
    this.#log?.warn("Scope report not current and not rebuilt in time; answered with a report holding no nodes", { why, waitedMs: this.#now() - waitStarted });
    return this.#standIn(why);
  }

  /** A valid report with no nodes: nothing for Scope to merge, and a description that says why. */
  #standIn(why: string): Buffer {
    const identity = { ...this.#identity, description: `${this.#identity.description}; report not ready: ${why}; the next request gets it` };
    return runSteps(renderScopeReportBody(identity, this.#deriver, this.#hostId, {
      open: [], closed: [], droppedClosed: 0, status: this.#backend.status(), clients: this.#backend.clientCount(), delivery: this.#backend.delivery(), now: new Date(this.#now()),
    }));
  }

  /** The snapshot behind the body bodyFor(probeId) would serve now. */
  #stampFor(probeId: string | undefined): Stamp | undefined {
    const probe = probeId === undefined ? undefined : this.#probes.get(probeId);
    return probe?.body !== undefined ? probe.bodyStamp : this.#anonymous !== undefined ? this.#anonymousStamp : undefined;
  }

  /**
   * `idle`: nobody asked for idleAfterMs, so no rebuild was running to replace the body: a changed
   * body is then stale however young (with Scope's 1 s polls and the 30 s quiet spell, a body is
   * always older than a cycle by then anyway; this keeps shorter quiet spells honest too).
   */
  #isCurrent(stamp: Stamp | undefined, idle = false): boolean {
    if (stamp === undefined) return false;
    const age = this.#now() - stamp.atMs;
    // As old as a body gets while rebuilds keep up: the wait before the next build, and that build.
    const cycle = Math.max(this.#options.minRebuildIntervalMs, this.#options.buildCostFactor * this.#lastDurationMs) + this.#lastRenderMs;
    if (stamp.changeSeq === this.#changeSeq && age <= this.#options.maxAgeMs + cycle) return true;
    return !idle && age <= cycle;
  }

  /** A body started going out; call the result once it is out (or abandoned). Rebuilds yield to it. */
  responseWriting(): () => void {
    this.#writing++;
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      if (--this.#writing === 0) this.#responsesOut?.();
    };
  }

  /** Between rebuild slices: while bodies are being written, wait for them (within this build's budget). */
  #yieldToResponses(): Promise<void> | undefined {
    if (this.#writing === 0 || this.#waitBudgetMs <= 0) return undefined;
    this.waits++;
    const started = performance.now();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#responsesOut = undefined;
        this.#waitBudgetMs -= performance.now() - started;
        resolve();
      };
      const timer = setTimeout(done, this.#waitBudgetMs);
      this.#responsesOut = done;
    });
  }

  /** Rebuilds every body from the backend now (after any build in progress). */
  async refresh(): Promise<void> {
    while (this.#job !== undefined) await this.#job;
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#job = this.#build().finally(() => {
      this.#job = undefined;
      if (this.#dirty && !this.#idle()) this.#schedule();
    });
    await this.#job;
  }

  #serveAnonymous(): Buffer {
    if (!this.#anonymousServed) {
      this.#anonymousServed = true;
      this.#markDirty(false);
    }
    // Only before the first build completes; start() awaits that build.
    return this.#anonymous ?? Buffer.from("{}");
  }

  #register(probeId: string): ProbeState | undefined {
    if (this.#probes.size >= this.#options.maxProbes) {
      if (!this.#warnedFull) this.#log?.warn("too many Scope probes; later ones get open connections only", { maxProbes: this.#options.maxProbes });
      this.#warnedFull = true;
      return undefined;
    }
    const probe: ProbeState = {
      probeId,
      clientId: `scope:${probeId}`,
      registered: false,
      body: undefined,
      bodyGeneration: 0,
      bodyStamp: undefined,
      built: new WeakMap(),
      pending: [],
      dropped: [],
      lastRequestMs: this.#now(),
    };
    this.#probes.set(probeId, probe);
    // Register with the backend right after this response, so that closes from now on are kept.
    setImmediate(() => this.#safe(() => this.#pull(probe)));
    this.#markDirty();
    return probe;
  }

  /** Takes this probe's closes from the backend into its pending set. */
  #pull(probe: ProbeState, generation = this.#generation): void {
    if (this.#stopped || this.#probes.get(probe.probeId) !== probe) return;
    const report = this.#backend.report(probe.clientId);
    probe.registered = true;
    let dropped = report.droppedClosed;
    for (const c of report.connections) {
      if (!c.closed) continue;
      if (probe.pending.length < this.#options.maxPendingClosed) probe.pending.push({ connection: c, generation });
      else dropped++;
    }
    if (dropped > 0) probe.dropped.push({ count: dropped, generation });
  }

  async #build(): Promise<void> {
    const started = this.#now();
    this.#lastStartMs = started;
    this.#dirty = false;
    const stamp: Stamp = { atMs: started, changeSeq: this.#changeSeq };
    const generation = ++this.#generation;
    this.#waitBudgetMs = this.#options.maxWaitForResponsesMs;
    this.#expireProbes();
    // Everything is taken from the backend at once, so one build sees one state of the table.
    const open = this.#backend.openConnections();
    this.#lastOpenCount = open.length;
    const status = this.#backend.status();
    const clients = this.#backend.clientCount();
    const delivery = this.#backend.delivery();
    const jobs: Array<{ probe?: ProbeState; closed: Connection[]; dropped: number }> = [];
    if (this.#anonymous === undefined || this.#anonymousServed) jobs.push({ closed: [], dropped: 0 });
    this.#anonymousServed = false;
    for (const probe of this.#probes.values()) {
      this.#pull(probe, generation);
      if (!probe.registered) continue;
      jobs.push({ probe, closed: probe.pending.map((p) => p.connection), dropped: probe.dropped.reduce((sum, d) => sum + d.count, 0) });
    }
    let shared: Buffer | undefined;
    for (const job of jobs) {
      if (this.#stopped) return;
      let body: Buffer;
      if (job.closed.length === 0 && job.dropped === 0 && shared !== undefined) {
        body = shared;
      } else {
        body = await runStepsAsync(renderScopeReportBody(this.#identity, this.#deriver, this.#hostId, {
          open, closed: job.closed, droppedClosed: job.dropped, status, clients, delivery, now: new Date(started),
        }), () => this.#yieldToResponses());
        this.builds++;
        if (job.closed.length === 0 && job.dropped === 0) shared = body;
      }
      // The freshest open-connections body is what anonymous readers and retired probes get.
      if (body === shared) {
        this.#anonymous = body;
        this.#anonymousStamp = stamp;
      }
      if (job.probe !== undefined) {
        job.probe.body = body;
        job.probe.bodyGeneration = generation;
        job.probe.bodyStamp = stamp;
        job.probe.built.set(body, generation);
      }
    }
    this.#lastDurationMs = this.#now() - started;
    // A build with nothing to render says nothing about how long the next body takes.
    if (jobs.length > 0) this.#lastRenderMs = this.#lastDurationMs;
  }

  /** `changed`: the bodies are out of date (not just older), see #isCurrent. */
  #markDirty(changed = true): void {
    if (changed) this.#changeSeq++;
    this.#dirty = true;
    if (this.#job === undefined && !this.#idle()) this.#schedule();
  }

  #idle(): boolean {
    return this.#now() - this.#lastRequestMs > this.#options.idleAfterMs;
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#stopped) return;
    const gap = Math.max(this.#options.minRebuildIntervalMs, this.#options.buildCostFactor * this.#lastDurationMs);
    const wait = Math.max(0, this.#lastStartMs + gap - this.#now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.refresh().catch((error) => this.#log?.error("building the Scope report failed; serving the previous one", { error }));
    }, wait);
    this.#timer.unref();
  }

  #expireProbes(): void {
    const oldest = this.#now() - this.#options.probeExpiryMs;
    for (const [id, probe] of this.#probes) if (probe.lastRequestMs < oldest) this.#probes.delete(id);
  }

  #safe(action: () => void): void {
    try {
      action();
    } catch (error) {
      this.#log?.error("pulling closed connections for a Scope probe failed", { error });
    }
  }
}
