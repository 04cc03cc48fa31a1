/**
 * Closed connections kept per client until that client has seen them once (Scope kept them for one
 * consumer only; with several probes or tools polling, each must see every short-lived connection).
 * Bounded twice: a client's buffer has a cap (overflow counted and told to that client), and a client
 * that stops asking expires.
 */
import type { Connection } from "../model/connection.ts";

export interface ClientRegistryOptions {
  maxClosedPerClient: number;
  clientExpiryMs: number;
  now?: () => number;
}

interface ClientState {
  closed: Connection[];
  dropped: number;
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
  expired = 0;

  constructor(options: ClientRegistryOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#clients.size;
  }

  /** Called by the table for every close, in order. */
  recordClose(connection: Connection): void {
    for (const client of this.#clients.values()) {
      if (client.closed.length < this.#options.maxClosedPerClient) client.closed.push(connection);
      else client.dropped++;
    }
  }

  /** Hands over (and forgets) what this client has not yet seen; registers it on first call. */
  takeClosed(clientId: string): ClosedSinceLast {
    this.expireIdle();
    const now = this.#now();
    const client = this.#clients.get(clientId);
    if (client === undefined) {
      this.#clients.set(clientId, { closed: [], dropped: 0, lastSeenMs: now });
      return { closed: [], dropped: 0, firstReport: true };
    }
    const taken = { closed: client.closed, dropped: client.dropped, firstReport: false };
    client.closed = [];
    client.dropped = 0;
    client.lastSeenMs = now;
    return taken;
  }

  expireIdle(): void {
    const oldest = this.#now() - this.#options.clientExpiryMs;
    for (const [id, client] of this.#clients) {
      if (client.lastSeenMs < oldest) {
        this.#clients.delete(id);
        this.expired++;
      }
    }
  }
}
