/** Starts the Python peers of test/helpers/peer.py inside a namespace and reads what they print. */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const PEER = fileURLToPath(new URL("./peer.py", import.meta.url));

export interface Peer {
  child: ChildProcessWithoutNullStreams;
  pid: number;
  /** /proc/PID/comm of the peer, as the kernel will report it. */
  comm(): string;
  /** Next printed line. */
  line(): Promise<string>;
  /** Lines until (and without) the terminator. */
  linesUntil(terminator: string): Promise<string[]>;
  stop(): Promise<void>;
}

function startPeer(netns: string, args: string[]): Peer {
  const child = spawn("ip", ["netns", "exec", netns, "python3", "-u", PEER, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  const queue: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  createInterface({ input: child.stdout }).on("line", (line) => {
    const waiter = waiters.shift();
    if (waiter) waiter(line);
    else queue.push(line);
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const line = () =>
    new Promise<string>((resolve, reject) => {
      const queued = queue.shift();
      if (queued !== undefined) return resolve(queued);
      waiters.push(resolve);
      exited.then(() => reject(new Error(`peer ${args.join(" ")} exited: ${stderr}`)));
    });
  return {
    child,
    pid: child.pid!,
    comm: () => readFileSync(`/proc/${child.pid}/comm`, "utf8").trim(),
    line,
    async linesUntil(terminator) {
      const lines: string[] = [];
      for (let l = await line(); l !== terminator; l = await line()) lines.push(l);
      return lines;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

/** "late": accepts only after a newline on its stdin, for the reset-before-accept race. */
export async function startServer(netns: string, host: string, port: number, mode: "hold" | "close" | "late"): Promise<Peer> {
  const peer = startPeer(netns, ["serve", host, String(port), mode]);
  const first = await peer.line();
  if (first !== "listening") throw new Error(`server did not start: ${first}`);
  return peer;
}

/** Opens `count` connections and resets each at once (SO_LINGER 0): RSTs to a server that has not accepted yet. */
export function startResettingClient(netns: string, host: string, port: number, count: number): Peer {
  return startPeer(netns, ["connect-reset", host, String(port), String(count)]);
}

/** `perSecond` paces the connections (0: as fast as possible). */
export function startClient(netns: string, host: string, port: number, count: number, hold: boolean, perSecond = 0): Peer {
  return startPeer(netns, ["connect", host, String(port), String(count), hold ? "1" : "0", String(perSecond)]);
}
