/**
 * Closed connections kept until every client has seen them once (Scope kept them for one consumer
 * only; with several probes or tools polling, each must see every short-lived connection).
 * One shared log of closes (closed-log.ts) with a cursor per client, so memory does not grow with
 * the number of clients. Bounded twice: the log keeps at most `maxClosedPerClient` closes (a client
 * that falls further behind is told how many it missed), and a client that stops asking expires.
 */
import type { Connection } from "../model/connection.ts";
import { ClosedLog } from "./closed-log.ts";

export interface ClientRegistryOptions {
  maxClosedPerClient: number;
  clientExpiryMs: number;
  now?: () => number;
}

interface ClientState {
  /** Sequence number of the first close this client has not seen. */
  cursor: number;
  lastSeenMs: number;
}

export interface ClosedSinceLast {
  closed: Connection[];
  dropped: number;
  firstReport: boolean;
}

export class ClientRegistry {
  readonly #clients = new Map<string, ClientState>();
  readonly #options: ClientRegistryOptions;
  readonly #now: () => number;
  readonly #log = new ClosedLog();
  expired = 0;

  constructor(options: ClientRegistryOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#clients.size;
  }

  /** Closes held for clients that have not seen them yet. */
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

  /** Hands over what this client has not yet seen; registers it on first call. */
  takeClosed(clientId: string): ClosedSinceLast {
    this.expireIdle();
    const now = this.#now();
    const end = this.#log.next;
    const client = this.#clients.get(clientId);
    if (client === undefined) {
      this.#clients.set(clientId, { cursor: end, lastSeenMs: now });
      return { closed: [], dropped: 0, firstReport: true };
    }
    const dropped = Math.max(0, this.#log.first - client.cursor);
    const closed = this.#log.connectionsFrom(client.cursor);
    client.cursor = end;
    client.lastSeenMs = now;
    this.#trimSeen();
    return { closed, dropped, firstReport: false };
  }

  expireIdle(): void {
    const oldest = this.#now() - this.#options.clientExpiryMs;
    let removed = false;
    for (const [id, client] of this.#clients) {
      if (client.lastSeenMs < oldest) {
        this.#clients.delete(id);
        this.expired++;
        removed = true;
      }
    }
    if (removed) this.#trimSeen();
  }

  /** Drops the closes every client has already seen. */
  #trimSeen(): void {
    let min = this.#log.next;
    for (const client of this.#clients.values()) if (client.cursor < min) min = client.cursor;
    this.#log.dropBefore(min);
  }
}
