/**
 * A network namespace where conntrack tracks (a nat chain of ours with a conntrack-state rule, as any NAT host has)
 * and where real flows can be made by the hundred thousand (test/helpers/syn-burst.py: SYNs out
 * of a dummy device, never answered), with a conntrack-child.ts process reading them. Removed,
 * rules first, by `destroy()`.
 */
import { type ChildProcessByStdio, execFileSync, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const SYN_BURST = fileURLToPath(new URL("./syn-burst.py", import.meta.url));
const CHILD = fileURLToPath(new URL("./conntrack-child.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface FlowNamespace {
  name: string;
  /** Sends `count` SYNs (each a new flow) starting at source port `firstPort`; resolves when sent. */
  burst(count: number, firstPort?: number, firstDport?: number): Promise<void>;
  /** From now on, new flows to the burst's address are DNATed (to 10.250.0.3): every flow a NATed one. */
  dnatAll(): void;
  /** Starts a ConntrackSource in the namespace with these options. */
  reader(options?: Record<string, unknown>): ConntrackReader;
  destroy(): void;
}

export interface ConntrackReader {
  child: ChildProcessByStdio<Writable, Readable, null>;
  /** The next JSON line the child prints. */
  next(): Promise<Record<string, any>>;
  send(command: string): void;
  stop(): Promise<void>;
}

let counter = 0;

export function createFlowNamespace(): FlowNamespace {
  const name = `ctf-${process.pid % 10000}x${counter++}`;
  const ns = (...args: string[]) => execFileSync("ip", ["netns", "exec", name, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const readers: ConntrackReader[] = [];
  let hooked = false;
  let dnat = false;
  const destroy = () => {
    for (const r of readers) r.child.kill("SIGKILL");
    if (dnat) {
      try {
        ns("iptables", "-t", "nat", "-D", "OUTPUT", "-j", "conntrack-DNAT");
        ns("iptables", "-t", "nat", "-F", "conntrack-DNAT");
        ns("iptables", "-t", "nat", "-X", "conntrack-DNAT");
      } catch { /* namespace already gone */ }
    }
    if (hooked) {
      try {
        ns("iptables", "-t", "nat", "-D", "POSTROUTING", "-j", "conntrack-FLOWS");
        ns("iptables", "-t", "nat", "-F", "conntrack-FLOWS");
        ns("iptables", "-t", "nat", "-X", "conntrack-FLOWS");
      } catch { /* namespace already gone */ }
    }
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
    } catch { /* already gone */ }
  };
  try {
    execFileSync("ip", ["netns", "add", name]);
    ns("ip", "link", "set", "lo", "up");
    // A veth pair inside the namespace: packets to 10.250.0.2 leave by one end (after conntrack
    // confirmed their flow) and are dropped at the other, whose MAC they do not carry.
    ns("ip", "link", "add", "ctv0", "type", "veth", "peer", "name", "ctv1");
    ns("ip", "addr", "add", "10.250.0.1/24", "dev", "ctv0");
    ns("ip", "link", "set", "ctv0", "up");
    ns("ip", "link", "set", "ctv1", "up");
    ns("ip", "neigh", "add", "10.250.0.2", "lladdr", "02:00:00:00:00:02", "dev", "ctv0", "nud", "permanent");
    ns("iptables", "-t", "nat", "-N", "conntrack-FLOWS");
    ns("iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "conntrack-FLOWS");
    hooked = true;
    // A rule that asks for conntrack state: what makes the kernel track flows in this namespace.
    ns("iptables", "-t", "nat", "-A", "conntrack-FLOWS", "-m", "conntrack", "--ctstate", "NEW", "-j", "RETURN");
  } catch (error) {
    destroy();
    throw error;
  }
  return {
    name,
    dnatAll() {
      ns("ip", "neigh", "add", "10.250.0.3", "lladdr", "02:00:00:00:00:03", "dev", "ctv0", "nud", "permanent");
      ns("iptables", "-t", "nat", "-N", "conntrack-DNAT");
      ns("iptables", "-t", "nat", "-A", "OUTPUT", "-j", "conntrack-DNAT");
      ns("iptables", "-t", "nat", "-A", "conntrack-DNAT", "-d", "10.250.0.2", "-p", "tcp", "-j", "DNAT", "--to-destination", "10.250.0.3");
      dnat = true;
    },
    burst: (count, firstPort = 1024, firstDport = 1) => new Promise<void>((resolve, reject) => {
      const child = spawn("ip", ["netns", "exec", name, "python3", SYN_BURST, "10.250.0.1", "10.250.0.2", String(count), String(firstPort), String(firstDport)], { stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`syn-burst exited ${code}: ${stderr}`))));
    }),
    reader(options = {}) {
      const child = spawn("ip", ["netns", "exec", name, process.execPath, "--expose-gc", "--import", "tsx", CHILD, JSON.stringify(options)], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
      const lines: string[] = [];
      const waiters: Array<(line: string) => void> = [];
      createInterface({ input: child.stdout }).on("line", (line) => {
        const waiter = waiters.shift();
        if (waiter) waiter(line);
        else lines.push(line);
      });
      const reader: ConntrackReader = {
        child,
        next: () => new Promise((resolve, reject) => {
          const take = (line: string) => resolve(JSON.parse(line));
          const queued = lines.shift();
          if (queued !== undefined) return take(queued);
          waiters.push(take);
          child.once("exit", () => reject(new Error("conntrack child exited")));
        }),
        send: (command) => void child.stdin.write(`${command}\n`),
        async stop() {
          if (child.exitCode !== null) return;
          const exited = new Promise((resolve) => child.once("exit", resolve));
          child.stdin.write("quit\n");
          await exited;
        },
      };
      readers.push(reader);
      return reader;
    },
    destroy,
  };
}
