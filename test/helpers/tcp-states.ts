/**
 * Connections held in chosen TCP states (test/helpers/tcp-states-peer.py), with the table keys of
 * both ends and whether Scope's procspy would count each end open.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connectionKey } from "../../plugin/model/connection.ts";
import type { TestHost } from "./netns.ts";

const PEER = fileURLToPath(new URL("./tcp-states-peer.py", import.meta.url));

export type HeldState = "established" | "fin_wait1" | "fin_wait2" | "close_wait" | "last_ack" | "time_wait";
export const HELD_STATES: readonly HeldState[] = ["established", "fin_wait1", "fin_wait2", "close_wait", "last_ack", "time_wait"];

/** The kernel state of each end while held: [client end, server end]; undefined once the socket is gone. */
export const END_STATES: Record<HeldState, readonly [string, string | undefined]> = {
  established: ["ESTABLISHED", "ESTABLISHED"],
  fin_wait1: ["FIN_WAIT1", "ESTABLISHED"],
  fin_wait2: ["FIN_WAIT2", "CLOSE_WAIT"],
  close_wait: ["CLOSE_WAIT", "TIME_WAIT (remnant shown as FIN_WAIT2)"],
  last_ack: ["FIN_WAIT2", "LAST_ACK"],
  time_wait: ["TIME_WAIT", undefined],
};

const OPEN = new Set(["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT"]);

export interface HeldEnd {
  state: HeldState;
  /** The kernel state of this end, as END_STATES names it. */
  kernelState: string;
  side: "client" | "server";
  key: string;
  /** In Scope's set of open states. */
  open: boolean;
}

export interface HeldConnections {
  ends: HeldEnd[];
  /** Closes every socket the peer holds; resolves once it has. */
  release(): Promise<void>;
  stop(): Promise<void>;
}

/** Server ends in `server`'s namespace, client ends in `client`'s, over `family`. */
export async function holdStates(server: TestHost, client: TestHost, family: "ipv4" | "ipv6", port: number, states: readonly HeldState[] = HELD_STATES): Promise<HeldConnections> {
  const child = spawn("ip", ["netns", "exec", server.name, "python3", "-u", PEER, server[family], String(port), `/run/netns/${client.name}`, ...states], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<string> => {
    const line = await Promise.race([lines.next(), exited.then(() => ({ done: true as const, value: undefined }))]);
    if (line.done) throw new Error(`tcp-states peer exited: ${stderr}`);
    return line.value;
  };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
  };
  try {
    const ends: HeldEnd[] = [];
    for (let line = await next(); line !== "held"; line = await next()) {
      const [word, state, clientPort] = line.split(" ");
      if (word !== "ready") throw new Error(`tcp-states peer: ${line}`);
      const [clientState, serverState] = END_STATES[state as HeldState];
      const p = Number(clientPort);
      ends.push({
        state: state as HeldState, kernelState: clientState, side: "client", open: OPEN.has(clientState),
        key: connectionKey({ netns: client.netns, localAddress: client[family], localPort: p, remoteAddress: server[family], remotePort: port }),
      });
      ends.push({
        state: state as HeldState, kernelState: serverState ?? "gone", side: "server", open: serverState !== undefined && OPEN.has(serverState),
        key: connectionKey({ netns: server.netns, localAddress: server[family], localPort: port, remoteAddress: client[family], remotePort: p }),
      });
    }
    return {
      ends,
      async release() {
        child.stdin.write("close\n");
        if ((await next()) !== "closed") throw new Error("tcp-states peer did not close");
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
