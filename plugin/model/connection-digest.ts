/**
 * An order-independent digest of a set of connections by what a reconcile compares: four-tuple,
 * namespace, pid and process name (not direction, which a scan only guesses). Two sets with the
 * same count and digest are the same set but for a 2^-64 chance, so a reconcile whose snapshot
 * digests like the table has nothing to add, remove or update, and can skip building a
 * connection and a key per socket (at 200k sockets, most of its cost).
 *
 * Each connection is mixed into two 32-bit lanes (murmur3's block step and finalizer, different
 * seeds), and the lanes are summed: the sum does not depend on order. Strings (addresses,
 * names) are hashed once each and remembered: a host has far fewer of them than connections.
 *
 * The sums are kept per bucket of the ports (DIGEST_BUCKETS): where two digests differ, only the
 * buckets that differ need comparing one by one (one ghost in a 200k table: ~800 connections).
 */
import type { Connection } from "./connection.ts";

const textHashes = new Map<string, number>();
const MAX_TEXT_HASHES = 65_536;

/** FNV-1a over the UTF-16 code units. */
function textHash(text: string): number {
  let h = textHashes.get(text);
  if (h !== undefined) return h;
  h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  if (textHashes.size >= MAX_TEXT_HASHES) textHashes.clear();
  textHashes.set(text, h);
  return h;
}

function step(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  h ^= Math.imul(k, 0x1b873593);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** Buckets a digest keeps apart; a power of two. */
export const DIGEST_BUCKETS = 256;

/** A connection's bucket, by its ports alone: the table, the snapshot's records and its connections all have them. */
export function digestBucket(localPort: number, remotePort: number): number {
  return Math.imul((localPort << 16) | remotePort, 0x9e3779b1) >>> 24;
}

export class ConnectionDigest {
  count = 0;
  readonly #a = new Int32Array(DIGEST_BUCKETS);
  readonly #b = new Int32Array(DIGEST_BUCKETS);
  readonly #counts = new Uint32Array(DIGEST_BUCKETS);

  add(netns: number, localAddress: string, localPort: number, remoteAddress: string, remotePort: number, pid: number, comm: string): void {
    const local = textHash(localAddress);
    const remote = textHash(remoteAddress);
    const name = textHash(comm);
    const ports = (localPort << 16) | remotePort;
    const bucket = digestBucket(localPort, remotePort);
    this.#a[bucket] = (this.#a[bucket] + finish(step(step(step(step(step(step(0x9747b28c, netns), ports), local), remote), pid), name))) | 0;
    this.#b[bucket] = (this.#b[bucket] + finish(step(step(step(step(step(step(0x2f1c6e4d, name), pid), remote), local), ports), netns))) | 0;
    this.#counts[bucket]++;
    this.count++;
  }

  addConnection(c: Connection): void {
    this.add(c.netns, c.localAddress, c.localPort, c.remoteAddress, c.remotePort, c.pid, c.comm);
  }

  bucketEquals(other: ConnectionDigest, bucket: number): boolean {
    return this.#counts[bucket] === other.#counts[bucket] && this.#a[bucket] === other.#a[bucket] && this.#b[bucket] === other.#b[bucket];
  }
}
