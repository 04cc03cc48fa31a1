/**
 * Closed connections kept until every client has seen them once (Scope kept them for one consumer
 * only; with several probes or tools polling, each must see every short-lived connection).
 * One shared log of closes (closed-log.ts) with a cursor per client, so memory does not grow with
 * the number of clients. Bounded three times: the log keeps at most `maxClosedPerClient` closes (a
 * client that falls further behind is told how many it missed), a client that stops asking
 * expires, and each kind of client (the id's prefix before ":", e.g. "grpc" or "scope") holds at
 * most `maxClientsPerKind` ids, the least recently asking one leaving for a newcomer.
 *
 * A client's cursor moves only when an answer is known to have reached it (`OfferedClosed.delivered`):
 * an answer that failed, was cancelled or never left offers the same closes again on the next call.
 */
import type { Connection } from "../model/connection.ts";
import { ClosedLog } from "./closed-log.ts";

export interface ClientRegistryOptions {
  maxClosedPerClient: number;
  clientExpiryMs: number;
  /** Ids per kind (prefix before ":"); default DEFAULT_MAX_CLIENTS_PER_KIND. */
  maxClientsPerKind?: number;
  now?: () => number;
}

/**
 * Scope probes are capped at 16 by the report cache; gRPC tools are cheaper (a cursor each), but
 * an id per call from a buggy script must not grow the map, nor the status' client count, forever.
 */
export const DEFAULT_MAX_CLIENTS_PER_KIND = 256;

interface ClientState {
  /** Sequence number of the first close this client has not been delivered. */
  cursor: number;
  lastSeenMs: number;
  /** Whether any answer has reached this client since it registered. */
  answered: boolean;
}

export interface ClosedSinceLast {
  closed: Connection[];
  dropped: number;
  /** True until an answer to this client id has been delivered since it registered. */
  firstReport: boolean;
}

export interface OfferedClosed extends ClosedSinceLast {
  /** Marks these closes (and the dropped count) as delivered: the next offer starts after them. */
  delivered(): void;
  /** The client id that left the registry to make room for this one, if any. */
  evicted: string | undefined;
}

export class ClientRegistry {
  /** Map order is recency order: the first entry of a kind is the least recently asking one. */
  readonly #clients = new Map<string, ClientState>();
  readonly #perKind = new Map<string, number>();
  readonly #options: ClientRegistryOptions;
  readonly #maxPerKind: number;
  readonly #now: () => number;
  readonly #log = new ClosedLog();
  expired = 0;
  /** Ids that left because their kind was full (see maxClientsPerKind). */
  evicted = 0;
  /** Offers whose answer never reached the client (failed, cancelled, abandoned): their closes stayed. */
  undelivered = 0;

  constructor(options: ClientRegistryOptions) {
    this.#options = options;
    this.#maxPerKind = options.maxClientsPerKind ?? DEFAULT_MAX_CLIENTS_PER_KIND;
    if (!(this.#maxPerKind > 0)) throw new RangeError("maxClientsPerKind must be positive");
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#clients.size;
  }

  /** Closes held for clients that have not been delivered them yet. */
  get pendingCloses(): number {
    return this.#log.size;
  }

  /** Called by the table for every close, in order. */
  recordClose(connection: Connection): void {
    if (this.#clients.size === 0) return;
    const max = this.#options.maxClosedPerClient;
    if (this.#log.size >= max) this.#log.dropBefore(this.#log.next - max + 1);
    this.#log.append(connection);
  }

  /** Hands over what this client has not yet seen, at once (for in-process readers). */
  takeClosed(clientId: string): ClosedSinceLast {
    const offer = this.offerClosed(clientId);
    offer.delivered();
    return offer;
  }

  /**
   * What this client has not been delivered yet; registers it on first call. Nothing moves until
   * `delivered()` is called; an offer never acknowledged should be reported with `notDelivered()`.
   */
  offerClosed(clientId: string): OfferedClosed {
    this.expireIdle();
    const now = this.#now();
    const end = this.#log.next;
    let client = this.#clients.get(clientId);
    let evicted: string | undefined;
    if (client === undefined) {
      evicted = this.#makeRoom(kindOf(clientId));
      client = { cursor: end, lastSeenMs: now, answered: false };
      this.#clients.set(clientId, client);
      this.#perKind.set(kindOf(clientId), (this.#perKind.get(kindOf(clientId)) ?? 0) + 1);
    } else {
      // Re-inserted: Map order stays recency order.
      this.#clients.delete(clientId);
      this.#clients.set(clientId, client);
      client.lastSeenMs = now;
    }
    const state = client;
    const firstReport = !state.answered;
    const dropped = Math.max(0, this.#log.first - state.cursor);
    const closed = this.#log.connectionsFrom(state.cursor);
    return {
      closed,
      dropped,
      firstReport,
      evicted,
      delivered: () => {
        // A client that expired or was evicted meanwhile starts over; nothing to move.
        if (this.#clients.get(clientId) !== state) return;
        state.answered = true;
        if (end > state.cursor) {
          state.cursor = end;
          this.#trimSeen();
        }
      },
    };
  }

  /** Counts an offer whose answer did not reach its client. */
  notDelivered(): void {
    this.undelivered++;
  }

  expireIdle(): void {
    const oldest = this.#now() - this.#options.clientExpiryMs;
    let removed = false;
    for (const [id, client] of this.#clients) {
      if (client.lastSeenMs < oldest) {
        this.#remove(id);
        this.expired++;
        removed = true;
      }
    }
    if (removed) this.#trimSeen();
  }

  /** Makes room for one more client of `kind`: the least recently asking one of that kind leaves. */
  #makeRoom(kind: string): string | undefined {
    if ((this.#perKind.get(kind) ?? 0) < this.#maxPerKind) return undefined;
    for (const id of this.#clients.keys()) {
      if (kindOf(id) !== kind) continue;
      this.#remove(id);
      this.evicted++;
      this.#trimSeen();
      return id;
    }
    return undefined;
  }

  #remove(id: string): void {
    this.#clients.delete(id);
    const kind = kindOf(id);
    const left = (this.#perKind.get(kind) ?? 1) - 1;
    if (left > 0) this.#perKind.set(kind, left);
    else this.#perKind.delete(kind);
  }

  /** Drops the closes every client has already been delivered. */
  #trimSeen(): void {
    let min = this.#log.next;
    for (const client of this.#clients.values()) if (client.cursor < min) min = client.cursor;
    this.#log.dropBefore(min);
  }
}

function kindOf(clientId: string): string {
  const colon = clientId.indexOf(":");
  return colon < 0 ? "" : clientId.slice(0, colon);
}
