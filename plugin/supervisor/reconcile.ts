/**
 * Brings the table in line with a scan (BPF socket snapshot or /proc) without creating ghosts or gaps:
 * - a connection closed while the scan ran (seen as an event) is not re-added from the scan's stale copy;
 * - a connection opened while the scan ran may be missing from it, so it is not removed for that;
 * - what the table knew before and the kernel no longer has is closed (clients see the close once),
 *   but only in namespaces the scan read in full: a table that failed to read proves nothing gone.
 *
 * It runs in slices of at most SLICE_MS, handing the event loop back between them (a 200k table is
 * ~100 ms of work); events applied in between are safe because the caller keeps collecting the
 * keys opened and closed until the reconcile has returned.
 */
import { type Connection, connectionKey, type Direction } from "../model/connection.ts";
import type { ConnectionTable } from "../table/connection-table.ts";

export interface ReconcileInput {
  scanned: readonly Connection[];
  /** Keys of connections the table opened since the scan started (collected until this returns). */
  openedDuringScan: ReadonlySet<string>;
  /** Keys of closes applied since the scan started (collected until this returns). */
  closedDuringScan: ReadonlySet<string>;
  heuristic: (localPort: number, remotePort: number) => Direction;
  /** Whether the scan read every connection of this namespace; absent: it read them all. */
  readInFull?: (netns: number) => boolean;
  /** Which of the table's connections the scan speaks for (the rest it confirmed as they are); absent: all. */
  compares?: (connection: Connection) => boolean;
  /** Awaited between slices of work; absent: the whole reconcile runs in one go. */
  breathe?: () => Promise<void>;
  /** Longest slice of work between two breathes; default SLICE_MS (0: a pause at every check). */
  sliceMs?: number;
}

export interface ReconcileResult {
  added: number;
  removed: number;
  suppressed: number;
  /** Connections missing from the scan but kept: their namespace was not read in full. */
  kept: number;
  /** Known connections whose pid, name, direction or source the scan changed. */
  updated: number;
}

/** Longest run of work between two calls of `breathe`; the clock is read every CHECK_EVERY entries. */
export const SLICE_MS = 4;
const CHECK_EVERY = 256;
/**
 * V8 doubles a Map's or Set's storage in one step when an add finds it full, at each power of two
 * entries: past 64k that step is milliseconds of copying. A seed grows the scan's key set and the
 * table in lockstep, so both doubled within one slice (12-19 ms at 131,072 here); each doubling is
 * given a slice of its own instead. Only a hint: where an engine grows otherwise, nothing is lost.
 */
const DOUBLING_FROM = 65_536;
const doublesOnAdd = (size: number) => size >= DOUBLING_FROM && (size & (size - 1)) === 0;

export async function reconcileTable(table: ConnectionTable, input: ReconcileInput): Promise<ReconcileResult> {
  const result: ReconcileResult = { added: 0, removed: 0, suppressed: 0, kept: 0, updated: 0 };
  const readInFull = input.readInFull ?? (() => true);
  const breathe = input.breathe;
  const sliceMs = input.sliceMs ?? SLICE_MS;
  let n = 0;
  let sliceStart = performance.now();
  /** Whether this slice has run its time: checked on every CHECK_EVERY-th entry. */
  const due = () => breathe !== undefined && ++n % CHECK_EVERY === 0 && performance.now() - sliceStart >= sliceMs;
  const pause = async () => {
    await breathe!();
    sliceStart = performance.now();
  };
  const scannedKeys = new Set<string>();
  const opened = input.openedDuringScan;
  const closed = input.closedDuringScan;
  /** Distinct table entries the scan confirmed or added: when they are all of the table, nothing is gone. */
  let vouched = 0;
  const deletionsBefore = table.deletions;
  const scanned = input.scanned;
  /** A doubling just ran: the slice ends with it. */
  let pauseNext = false;
  // The sizes a pause was made for, once each: a run of duplicate keys, or a table at its cap
  // (each add evicts one), leaves a size where it was.
  let setPausedAt = -1;
  let tablePausedAt = -1;
  // By index: an iterator across awaits allocates a result per entry.
  for (let i = 0; i < scanned.length; i++) {
    const setDoubles = breathe !== undefined && setPausedAt !== scannedKeys.size && doublesOnAdd(scannedKeys.size);
    if (setDoubles) setPausedAt = scannedKeys.size;
    if (pauseNext || setDoubles || due()) {
      pauseNext = false;
      await pause();
    }
    const connection = scanned[i];
    const key = connectionKey(connection);
    const sizeBefore = scannedKeys.size;
    scannedKeys.add(key);
    const first = scannedKeys.size !== sizeBefore;
    if (setDoubles) pauseNext = true;
    if (closed.size !== 0 && closed.has(key)) {
      result.suppressed++;
      continue;
    }
    let confirmed = table.confirm(connection, key);
    if (confirmed === "unknown" && breathe !== undefined && tablePausedAt !== table.size && doublesOnAdd(table.size)) {
      tablePausedAt = table.size;
      await pause();
      pauseNext = true;
      // The pause let events in: this key may have been closed or opened meanwhile.
      if (closed.size !== 0 && closed.has(key)) {
        result.suppressed++;
        continue;
      }
      confirmed = table.confirm(connection, key);
    }
    if (confirmed === "updated") result.updated++;
    if (confirmed !== "unknown") {
      if (first) vouched++;
      continue;
    }
    const direction = connection.direction !== "unknown" ? connection.direction : input.heuristic(connection.localPort, connection.remotePort);
    table.open(direction === connection.direction ? connection : { ...connection, direction }, key);
    result.added++;
    vouched++;
  }
  // Entries opened during the scan and not in it are kept too; past those, anything the scan did
  // not vouch for is gone. The common case, nothing gone, is known without a pass over the table:
  // when the table lost no entry since the first was vouched for, all of those are still in it.
  const compares = input.compares;
  if (compares === undefined && table.deletions === deletionsBefore) {
    let keptOpened = 0;
    for (const key of opened) if (!scannedKeys.has(key) && table.has(key)) keptOpened++;
    if (vouched + keptOpened === table.size) return result;
  }

  // Collected first: closing while iterating the table's own keys would be iterating a moving map.
  const gone: string[] = [];
  if (compares === undefined) {
    for (const key of table.keys()) {
      // The table may change during a pause; a Map's iterator stays valid, deletions included.
      if (due()) await pause();
      if (scannedKeys.has(key) || (opened.size !== 0 && opened.has(key))) continue;
      gone.push(key);
    }
  } else {
    // Only the part the scan speaks for; keyed one by one, so only that part is. The table's
    // array never changes: what a pause adds is opened during the scan, what it removes is skipped below.
    const all = table.snapshot();
    for (let i = 0; i < all.length; i++) {
      if (due()) await pause();
      if (!compares(all[i])) continue;
      const key = connectionKey(all[i]);
      if (scannedKeys.has(key) || (opened.size !== 0 && opened.has(key))) continue;
      gone.push(key);
    }
  }
  for (const key of gone) {
    if (opened.has(key)) continue; // opened again during a pause after it was listed
    const known = table.get(key);
    if (known === undefined) continue;
    if (!readInFull(known.netns)) {
      result.kept++;
      continue;
    }
    table.close(key);
    result.removed++;
  }
  return result;
}
