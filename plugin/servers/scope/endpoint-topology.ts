/**
 * The "Endpoint" topology as Scope's own endpoint reporter writes it (probe/endpoint/
 * connection_tracker.go): one node per address:port, an adjacency from the side that opened the
 * connection to the side that accepted it, pid and host_node_id on the sides whose process is
 * known, and many ephemeral-port connections to one address:port thinned to a few representatives
 * that carry conn_count.
 *
 * Built often over tables of up to ~65k connections, so what each connection contributes is derived
 * once per connection object (the table replaces, never mutates, them) and the JSON is written
 * directly rather than through an object graph.
 */
import type { Connection } from "../../model/connection.ts";
import { addressId, hostNodeId, type NodeIdContext } from "./node-id.ts";

export interface LatestEntry {
  timestamp: string;
  value: string;
}

export interface EndpointNode {
  id: string;
  topology: "endpoint";
  adjacency?: string[];
  latest?: Record<string, LatestEntry>;
}

/** Which side opened the connection; without a known direction, Scope's port heuristic decides. */
export function isIncoming(c: Pick<Connection, "direction" | "localPort" | "remotePort">): boolean {
  if (c.direction === "incoming") return true;
  if (c.direction === "outgoing") return false;
  return c.localPort < c.remotePort;
}

/** One connection seen from the side that opened it. */
interface Edge {
  /** Scope's grouping: namespace, opening address, accepting address:port. */
  groupKey: string;
  /** "<scope>;<ip>;" of the opening side; its node id is this plus the port. */
  fromPrefix: string;
  fromPort: number;
  toId: string;
  incoming: boolean;
  pid: number;
}

const MAX_MEMO = 200_000;

/** Derives edges for one host id and set of local networks, remembering what it derived. */
export class EdgeDeriver {
  readonly #ctx: NodeIdContext;
  readonly #edges = new WeakMap<Connection, Edge>();
  /** "<netns>|<address text>" to "<scope>;<canonical ip>". */
  readonly #addressIds = new Map<string, string>();

  constructor(ctx: NodeIdContext) {
    this.#ctx = ctx;
  }

  get context(): NodeIdContext {
    return this.#ctx;
  }

  edge(c: Connection): Edge {
    let edge = this.#edges.get(c);
    if (edge === undefined) {
      const incoming = isIncoming(c);
      const from = this.#addressId(c.netns, incoming ? c.remoteAddress : c.localAddress);
      const to = this.#addressId(c.netns, incoming ? c.localAddress : c.remoteAddress);
      const toId = `${to};${incoming ? c.localPort : c.remotePort}`;
      edge = {
        groupKey: `${c.netns}|${from}|${toId}`,
        fromPrefix: `${from};`,
        fromPort: incoming ? c.remotePort : c.localPort,
        toId,
        incoming,
        pid: c.pid,
      };
      this.#edges.set(c, edge);
    }
    return edge;
  }

  #addressId(netns: number, address: string): string {
    const key = `${netns}|${address}`;
    let id = this.#addressIds.get(key);
    if (id === undefined) {
      // Remote addresses churn: start over rather than grow without bound.
      if (this.#addressIds.size >= MAX_MEMO) this.#addressIds.clear();
      id = addressId(this.#ctx, netns, address);
      this.#addressIds.set(key, id);
    }
    return id;
  }
}

interface PidPair {
  fromPid: number;
  toPid: number;
}

interface Group {
  fromPrefix: string;
  toId: string;
  /** Keyed by the opening side's (usually ephemeral) port. */
  ports: Map<number, PidPair>;
}

/** Longest a build runs between two yields, so that a large table never stalls the event loop long. */
export const SLICE_MS = 4;
let sliceStart = 0;

/** Checked every 256 items: the clock is cheap, but not free. */
function due(work: number): boolean {
  return (work & 255) === 0 && performance.now() - sliceStart >= SLICE_MS;
}

/** Generators that yield between slices: `runSteps` finishes one at once, `runStepsAsync` lets I/O in between. */
export type Steps<T> = Generator<void, T, void>;

export function runSteps<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** `pause`, between slices: a promise to wait for first (something more urgent is running), or undefined. */
export async function runStepsAsync<T>(steps: Steps<T>, pause?: () => Promise<void> | undefined): Promise<T> {
  for (;;) {
    sliceStart = performance.now();
    const r = steps.next();
    if (r.done) return r.value;
    const waitFor = pause?.();
    await (waitFor ?? new Promise<void>((resolve) => setImmediate(resolve)));
  }
}

function* groupEdges(connections: Iterable<Connection>, deriver: EdgeDeriver): Steps<Map<string, Group>> {
  const groups = new Map<string, Group>();
  let work = 0;
  for (const c of connections) {
    if (due(++work)) yield;
    const e = deriver.edge(c);
    let group = groups.get(e.groupKey);
    if (group === undefined) {
      group = { fromPrefix: e.fromPrefix, toId: e.toId, ports: new Map() };
      groups.set(e.groupKey, group);
    }
    let pids = group.ports.get(e.fromPort);
    if (pids === undefined) {
      pids = { fromPid: 0, toPid: 0 };
      group.ports.set(e.fromPort, pids);
    }
    // Both ends of a local connection land here: the outgoing record names the client, the
    // incoming one the server. A record without a pid never erases one that has it.
    if (e.pid !== 0) {
      if (e.incoming) pids.toPid = e.pid;
      else pids.fromPid = e.pid;
    }
  }
  return groups;
}

const POWER = 3; // not a power of two, to avoid aliasing with ephemeral port selection
const LOWER_BOUND = 3;
const UPPER_BOUND = 5;

/**
 * Scope's makeFilter: when every connection of a group has the same pids, keep only ports
 * divisible by a power of 3 chosen so that 3..5 remain (so that probes on both ends tend to keep
 * the same ones). Returns the modulus and how many ports pass it.
 */
export function makeFilter(ports: ReadonlyMap<number, PidPair>): { modulus: number; count: number } {
  let count = ports.size;
  let first: PidPair | undefined;
  for (const pids of ports.values()) {
    first ??= pids;
    if (pids.fromPid !== first.fromPid || pids.toPid !== first.toPid) return { modulus: 1, count };
  }
  let modulus = 1;
  while (count > UPPER_BOUND) {
    modulus *= POWER;
    const previous = count;
    count = 0;
    for (const port of ports.keys()) if (port % modulus === 0) count++;
    if (count < LOWER_BOUND) {
      modulus /= POWER;
      count = previous;
      break;
    }
  }
  return { modulus, count };
}

/** A node under construction: the first known pid and conn_count win, adjacency accumulates. */
export interface NodeAcc {
  pid: number;
  connCount: number;
  adjacency: string[] | undefined;
  /** Set on a NAT copy (plugin/conntrack/nat-topology.ts): the real node's id. */
  copyOf?: string;
}

export function* collectNodes(connections: Iterable<Connection>, deriver: EdgeDeriver): Steps<Map<string, NodeAcc>> {
  const nodes = new Map<string, NodeAcc>();
  const node = (id: string, pid: number): NodeAcc => {
    let n = nodes.get(id);
    if (n === undefined) {
      n = { pid, connCount: 0, adjacency: undefined };
      nodes.set(id, n);
    } else if (n.pid === 0) {
      n.pid = pid;
    }
    return n;
  };
  const groups = yield* groupEdges(connections, deriver);
  let work = 0;
  for (const key of yield* sortSteps([...groups.keys()])) {
    const group = groups.get(key)!;
    if (due(++work)) yield;
    const { modulus, count } = makeFilter(group.ports);
    const ports = [...group.ports.keys()].sort((a, b) => a - b);
    let seen = 0;
    let sent = 0;
    let skipped = 0;
    for (const fromPort of ports) {
      seen++;
      if (fromPort % modulus !== 0) {
        skipped++;
        continue;
      }
      sent++;
      // The last representative also stands for every port after it.
      if (sent === count) skipped += ports.length - seen;
      const pids = group.ports.get(fromPort)!;
      const from = node(group.fromPrefix + fromPort, pids.fromPid);
      node(group.toId, pids.toPid);
      if (skipped > 0 && from.connCount === 0) from.connCount = skipped + 1;
      (from.adjacency ??= []).push(group.toId);
      skipped = 0;
    }
  }
  for (const n of nodes.values()) {
    if (due(++work)) yield;
    if (n.adjacency !== undefined && n.adjacency.length > 1) sortedUnique(n.adjacency);
  }
  return nodes;
}

/** Bytes per finished piece of the nodes JSON: big enough to keep pieces few, small enough to encode in a slice. */
const CHUNK_CHARS = 64 * 1024;

/**
 * The topology's "nodes" object as JSON, keys sorted, in UTF-8 pieces to concatenate. Node ids
 * never need escaping (see addressId). Written piece by piece because one string of megabytes built
 * by `+=` is a deep rope whose flattening and encoding would stall the event loop for a long time.
 */
export function* renderNodesJsonChunks(nodes: ReadonlyMap<string, NodeAcc>, timestamp: string, hostId: string): Steps<Buffer[]> {
  const pidHead = `,"latest":{"pid":{"timestamp":"${timestamp}","value":"`;
  const hostTail = `"},"host_node_id":{"timestamp":"${timestamp}","value":${JSON.stringify(hostNodeId(hostId))}}`;
  const countHead = `"conn_count":{"timestamp":"${timestamp}","value":"`;
  const chunks: Buffer[] = [];
  let out = "{";
  let first = true;
  let work = 0;
  for (const id of yield* sortSteps([...nodes.keys()])) {
    if (due(++work)) yield;
    const n = nodes.get(id)!;
    out += `${first ? "" : ","}"${id}":{"id":"${id}","topology":"endpoint"`;
    first = false;
    const copyOf = n.copyOf === undefined ? "" : `,"copy_of":{"timestamp":"${timestamp}","value":"${n.copyOf}"}`;
    if (n.pid > 0) {
      out += pidHead + n.pid + hostTail;
      out += n.connCount > 1 ? `,${countHead}${n.connCount}"}${copyOf}}` : `${copyOf}}`;
    } else if (n.connCount > 1) {
      out += `,"latest":{${countHead}${n.connCount}"}${copyOf}}`;
    } else if (copyOf !== "") {
      out += `,"latest":{${copyOf.slice(1)}}`;
    }
    if (n.adjacency !== undefined) out += `,"adjacency":["${n.adjacency.join('","')}"]`;
    out += "}";
    if (out.length >= CHUNK_CHARS) {
      chunks.push(Buffer.from(out));
      out = "";
    }
  }
  chunks.push(Buffer.from(`${out}}`));
  return chunks;
}

/** The topology's "nodes" object as JSON text, keys sorted. */
export function* renderNodesJson(nodes: ReadonlyMap<string, NodeAcc>, timestamp: string, hostId: string): Steps<string> {
  return Buffer.concat(yield* renderNodesJsonChunks(nodes, timestamp, hostId)).toString();
}

/** Below this many keys a sort is quick enough to do in one go. */
const SORT_RUN = 2048;

/**
 * `keys.sort()` (UTF-16 code unit order, like the default sort) in steps: runs sorted natively,
 * then merged pairwise, yielding between slices, because sorting 100k ids at once takes ~100 ms.
 */
export function* sortSteps(keys: string[]): Steps<string[]> {
  if (keys.length <= SORT_RUN) return keys.sort();
  let work = 0;
  for (let start = 0; start < keys.length; start += SORT_RUN) {
    if (due((work += 256))) yield;
    const run = keys.slice(start, start + SORT_RUN).sort();
    for (let i = 0; i < run.length; i++) keys[start + i] = run[i];
  }
  let from = keys;
  let to = new Array<string>(keys.length);
  for (let width = SORT_RUN; width < keys.length; width *= 2) {
    for (let left = 0; left < keys.length; left += 2 * width) {
      const mid = Math.min(left + width, keys.length);
      const end = Math.min(left + 2 * width, keys.length);
      let i = left;
      let j = mid;
      let k = left;
      while (i < mid && j < end) {
        if (due(++work)) yield;
        to[k++] = from[j] < from[i] ? from[j++] : from[i++];
      }
      while (i < mid) to[k++] = from[i++];
      while (j < end) to[k++] = from[j++];
    }
    [from, to] = [to, from];
  }
  return from;
}

/** The same nodes as objects (for tests and tools). */
export function buildEndpointNodes(connections: Iterable<Connection>, ctx: NodeIdContext & { timestamp: string }): Map<string, EndpointNode> {
  const nodes = runSteps(collectNodes(connections, new EdgeDeriver(ctx)));
  const out = new Map<string, EndpointNode>();
  for (const id of [...nodes.keys()].sort()) {
    const n = nodes.get(id)!;
    const node: EndpointNode = { id, topology: "endpoint" };
    const latest: Record<string, LatestEntry> = {};
    if (n.pid > 0) {
      latest.pid = { timestamp: ctx.timestamp, value: String(n.pid) };
      latest.host_node_id = { timestamp: ctx.timestamp, value: hostNodeId(ctx.hostId) };
    }
    if (n.connCount > 1) latest.conn_count = { timestamp: ctx.timestamp, value: String(n.connCount) };
    if (n.copyOf !== undefined) latest.copy_of = { timestamp: ctx.timestamp, value: n.copyOf };
    if (Object.keys(latest).length > 0) node.latest = latest;
    if (n.adjacency !== undefined) node.adjacency = n.adjacency;
    out.set(id, node);
  }
  return out;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function sortedUnique(ids: string[]): string[] {
  ids.sort(compare);
  let out = 0;
  for (let i = 0; i < ids.length; i++) if (i === 0 || ids[i] !== ids[out - 1]) ids[out++] = ids[i];
  ids.length = out;
  return ids;
}
