/**
 * Brings the table in line with a /proc scan without creating ghosts or gaps:
 * - a connection closed while the scan ran (seen as an event) is not re-added from the scan's stale copy;
 * - a connection opened while the scan ran was never in `keysBefore`, so it is not removed for missing from it;
 * - what the table knew before and the kernel no longer has is closed (clients see the close once),
 *   but only in namespaces the scan read in full: a table that failed to read proves nothing gone.
 */
import { type Connection, connectionKey, type Direction } from "../model/connection.ts";
import type { ConnectionTable } from "../table/connection-table.ts";

export interface ReconcileInput {
  scanned: readonly Connection[];
  /** Table keys taken just before the scan started. */
  keysBefore: ReadonlySet<string>;
  /** Keys of closes applied while the scan was running. */
  closedDuringScan: ReadonlySet<string>;
  heuristic: (localPort: number, remotePort: number) => Direction;
  /** Whether the scan read every connection of this namespace; absent: it read them all. */
  readInFull?: (netns: number) => boolean;
}

export interface ReconcileResult {
  added: number;
  removed: number;
  suppressed: number;
  /** Connections missing from the scan but kept: their namespace was not read in full. */
  kept: number;
}

export function reconcileTable(table: ConnectionTable, input: ReconcileInput): ReconcileResult {
  const result: ReconcileResult = { added: 0, removed: 0, suppressed: 0, kept: 0 };
  const readInFull = input.readInFull ?? (() => true);
  const scannedKeys = new Set<string>();
  for (const connection of input.scanned) {
    const key = connectionKey(connection);
    scannedKeys.add(key);
    if (input.closedDuringScan.has(key)) {
      result.suppressed++;
      continue;
    }
    const known = table.get(key);
    if (known !== undefined) {
      table.open(connection);
      continue;
    }
    const direction = connection.direction !== "unknown" ? connection.direction : input.heuristic(connection.localPort, connection.remotePort);
    table.open(direction === connection.direction ? connection : { ...connection, direction });
    result.added++;
  }
  for (const key of input.keysBefore) {
    if (scannedKeys.has(key)) continue;
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
