/**
 * The /proc scan as one generator of synchronous steps: it yields every few hundred syscalls so a
 * driver (scan.ts) can either run it straight through or hand the event loop back between slices.
 *
 * 1. every /proc/PID/ns/net link groups the processes by network namespace;
 * 2. net/tcp and net/tcp6 are read once per namespace, through the first of its processes that is
 *    still there (listening ports, established rows);
 * 3. /proc/PID/fd/* links map socket inodes to the lowest pid holding them, stopping as soon as every
 *    established socket has an owner (socket inodes are unique host-wide, so one map serves all
 *    namespaces, and a socket that moved to a process in another namespace is still found);
 * 4. comm of the owners only.
 */
import { existsSync, readdirSync } from "node:fs";
import type { Connection } from "../model/connection.ts";
import { AddressDecoder } from "./address-decoder.ts";
import type { FdWalker, FdWalkerKind } from "./fd-walk.ts";
import { InodeIndex } from "./inode-index.ts";
import { bracketedInode, isPidName } from "./links.ts";
import { readLink, readSmallText, readTable } from "./proc-io.ts";
import { OPEN_TCP_STATES, TcpState, TcpTableParser } from "./tcp-table.ts";

export interface ProcScan {
  /** Open sockets (OPEN_TCP_STATES), one per local socket, in every namespace. */
  connections: Connection[];
  /** Listening TCP ports (IPv4 and IPv6) per network namespace inode. */
  listening: Map<number, Set<number>>;
  namespaces: number;
  /** Table lines that were not well-formed rows. */
  skippedLines: number;
  /** Reads that failed for a reason other than the process vanishing (EACCES, bad links, ...). */
  errors: number;
  /**
   * Namespaces whose net/tcp or net/tcp6 could not be read in full: what the scan found there is
   * real, but a connection missing from it may only be unread, so nothing of theirs may be closed.
   */
  unreadNamespaces: Set<number>;
  /**
   * Processes whose network namespace could not be read (not because they vanished): a namespace
   * absent from this scan may then be unreadable rather than gone.
   */
  unplacedProcesses: number;
  /** Which walk mapped sockets to processes: the native addon's or the JS one. */
  fdWalker: FdWalkerKind;
  durationMs: number;
}

/** How many syscalls may run between two yields. */
const STEP = 128;
/** procfs hands out net/tcp one page per read() whatever the buffer; copies of it (fixtures) fill more. */
const TABLE_BUFFER_BYTES = 64 * 1024;

export function* scanSteps(procRoot: string, decoder: AddressDecoder, walker: FdWalker): Generator<void, ProcScan> {
  const started = performance.now();
  const result: ProcScan = {
    connections: [], listening: new Map(), namespaces: 0, skippedLines: 0, errors: 0,
    unreadNamespaces: new Set(), unplacedProcesses: 0, fdWalker: walker.kind, durationMs: 0,
  };
  const root = procRoot.endsWith("/") && procRoot.length > 1 ? procRoot.slice(0, -1) : procRoot;
  const pids = listPids(root);
  const byNamespace = yield* groupByNamespace(root, pids, result);
  result.namespaces = byNamespace.size;
  const byInode = new InodeIndex();
  const buffer = new Uint8Array(TABLE_BUFFER_BYTES);
  for (const [netns, members] of byNamespace) yield* readNamespaceTables(root, netns, members, { decoder, buffer, byInode, result });
  const owners = yield* findOwners(root, pids, byInode, walker, result);
  yield* nameOwners(root, owners, result);
  result.durationMs = performance.now() - started;
  return result;
}

/** The only failure that fails the scan: a proc root that cannot be listed is a configuration error. */
function listPids(root: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync(root)) if (isPidName(name)) pids.push(Number(name));
  // Lowest pid first: the owner of a shared socket is then the oldest process holding it.
  return pids.sort((a, b) => a - b);
}

function* groupByNamespace(root: string, pids: number[], result: ProcScan): Generator<void, Map<number, number[]>> {
  const byNamespace = new Map<number, number[]>();
  for (let i = 0; i < pids.length; i++) {
    const link = readLink(`${root}/${pids[i]}/ns/net`);
    if (link.ok) {
      const netns = bracketedInode(link.value, "net:[");
      if (netns === 0) {
        result.errors++;
        result.unplacedProcesses++;
      } else {
        const members = byNamespace.get(netns);
        if (members === undefined) byNamespace.set(netns, [pids[i]]);
        else members.push(pids[i]);
      }
    } else if (!link.vanished) {
      result.errors++;
      result.unplacedProcesses++;
    }
    if (i % STEP === STEP - 1) yield;
  }
  return byNamespace;
}

interface TableContext {
  decoder: AddressDecoder;
  buffer: Uint8Array;
  /** Socket inode -> index in result.connections. */
  byInode: InodeIndex;
  result: ProcScan;
}

/** net/tcp and net/tcp6 of one namespace, read through the first of its processes still there. */
function* readNamespaceTables(root: string, netns: number, members: number[], { decoder, buffer, byInode, result }: TableContext): Generator<void, void> {
  const listening = new Set<number>();
  const first = result.connections.length;
  const parser = new TcpTableParser({
    decoder,
    states: [...OPEN_TCP_STATES, TcpState.listen],
    onRow: (state, localAddress, localPort, remoteAddress, remotePort, inode) => {
      if (state === TcpState.listen) return void listening.add(localPort);
      // Inode 0: still in the accept queue, no process holds it yet. A table read in several
      // syscalls can repeat a row when sockets come and go meanwhile: the first copy wins.
      if (inode !== 0 && !byInode.add(inode, result.connections.length)) return;
      result.connections.push({
        localAddress, localPort, remoteAddress, remotePort, netns,
        pid: 0, comm: "", direction: "unknown", closed: false, source: "procfs",
      });
    },
  });
  // Each family on its own: a failed net/tcp must not leave net/tcp6 unread.
  for (const family of ["tcp", "tcp6"] as const) {
    const read = yield* readFamily(root, family, members, buffer, parser);
    if (read === "failed") result.errors++;
    if (read === "failed" || read === "unread") result.unreadNamespaces.add(netns);
  }
  result.skippedLines += parser.skipped;
  result.listening.set(netns, listening);
  for (let i = first; i < result.connections.length; i++) {
    const c = result.connections[i];
    if (listening.has(c.localPort)) c.direction = "incoming";
  }
}

/**
 * One table of a namespace through the first of its processes still there. "absent": the file is
 * not there although its process is (net/tcp6 on a host with IPv6 disabled). "unread": every
 * process vanished first. "failed": a read error (every process shows the same table, so another
 * try would fail alike).
 */
function* readFamily(root: string, family: "tcp" | "tcp6", members: number[], buffer: Uint8Array, parser: TcpTableParser): Generator<void, "read" | "absent" | "unread" | "failed"> {
  for (const pid of members) {
    const table = yield* readTable(`${root}/${pid}/net/${family}`, buffer, parser);
    if (table.ok) return "read";
    if (!table.vanished) return "failed";
    if (family === "tcp6" && existsSync(`${root}/${pid}/net`)) return "absent";
  }
  return "unread";
}

/** Sets `pid` on every connection whose socket some process holds; returns the owner pids. */
function* findOwners(root: string, pids: number[], byInode: InodeIndex, walker: FdWalker, result: ProcScan): Generator<void, Set<number>> {
  const owners = new Set<number>();
  let unowned = byInode.size;
  let sinceYield = 0;
  for (const pid of pids) {
    if (unowned === 0) break;
    const walked = yield* walker.socketInodes(`${root}/${pid}/fd`);
    if (!walked.ok) {
      if (!walked.vanished) result.errors++;
      continue;
    }
    const inodes = walked.value;
    for (let i = 0; i < inodes.length; i++) {
      const index = byInode.get(inodes[i]);
      if (index < 0 || result.connections[index].pid !== 0) continue;
      result.connections[index].pid = pid;
      owners.add(pid);
      if (--unowned === 0) break;
    }
    sinceYield += inodes.length + 1;
    if (sinceYield >= STEP) {
      sinceYield = 0;
      yield;
    }
  }
  return owners;
}

function* nameOwners(root: string, owners: Set<number>, result: ProcScan): Generator<void, void> {
  const comms = new Map<number, string>();
  let n = 0;
  for (const pid of owners) {
    const comm = readSmallText(`${root}/${pid}/comm`);
    if (comm.ok) comms.set(pid, comm.value.trim());
    else if (!comm.vanished) result.errors++;
    if (++n % STEP === 0) yield;
  }
  for (const c of result.connections) if (c.pid !== 0) c.comm = comms.get(c.pid) ?? "";
}
