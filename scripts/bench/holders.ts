/** Starts and grows conn-holder processes (scripts/bench/conn-holder.c) until they hold N connections. */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface, type Interface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/**
 * Builds the C helpers (build-helpers.sh: conn-holder, procfs-floor, page-touch) into build/bench
 * when missing or older than their sources; returns that directory.
 */
export function ensureBenchHelpers(): string {
  const outDir = join(here, "..", "..", "build", "bench");
  const stale = ["conn-holder", "procfs-floor", "page-touch"].some((name) => isStale(join(outDir, name), [join(here, `${name}.c`)]));
  if (stale) {
    const built = spawnSync("bash", [join(here, "build-helpers.sh"), outDir], { stdio: "inherit" });
    if (built.status !== 0) throw new Error("building the benchmark helpers failed");
  }
  return outDir;
}

/**
 * The plugin's flags for a table of `connections` held here: /proc as the source, so one scan at
 * start fills the table, and the periodic scans pushed past any measurement.
 */
export function heldTablePluginArgs(connections: number): string[] {
  return ["--source", "procfs", "--proc-poll-interval-ms", "600000", "--reconcile-interval-ms", "600000", "--max-connections", String(Math.max(65_536, connections * 3))];
}

/** True when `binary` is missing or older than any of `sources`. */
export function isStale(binary: string, sources: string[]): boolean {
  if (!existsSync(binary)) return true;
  const built = statSync(binary).mtimeMs;
  return sources.some((source) => built < statSync(source).mtimeMs);
}

interface Holder {
  child: ChildProcess;
  lines: Interface;
  capacity: number;
  held: number;
}

export class ConnectionHolders {
  readonly #binary: string;
  readonly #holders: Holder[] = [];

  constructor(binary: string) {
    this.#binary = binary;
  }

  get pids(): number[] {
    return this.#holders.map((h) => h.child.pid ?? 0);
  }

  /** Brings the total of held established connections to `total`, starting holders as needed. */
  async grow(total: number): Promise<void> {
    let remaining = total - this.#holders.reduce((sum, h) => sum + h.held, 0);
    for (const holder of this.#holders) {
      if (remaining <= 0) break;
      const add = Math.min(remaining, holder.capacity - holder.held);
      if (add > 0) await this.#growHolder(holder, holder.held + add);
      remaining -= add;
    }
    while (remaining > 0) {
      const holder = await this.#start(this.#holders.length);
      const add = Math.min(remaining, holder.capacity);
      await this.#growHolder(holder, add);
      remaining -= add;
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.#holders.map((h) => new Promise<void>((resolve) => {
      if (h.child.exitCode !== null || h.child.signalCode !== null) return resolve();
      h.child.once("exit", () => resolve());
      h.child.stdin?.end();
    })));
    this.#holders.length = 0;
  }

  async #start(instance: number): Promise<Holder> {
    const child = spawn(this.#binary, [String(instance)], { stdio: ["pipe", "pipe", "inherit"] });
    const lines = createInterface({ input: child.stdout! });
    const holder: Holder = { child, lines, capacity: 0, held: 0 };
    this.#holders.push(holder);
    const first = await nextLine(lines);
    const m = /^capacity (\d+)$/.exec(first);
    if (!m) throw new Error(`conn-holder ${instance}: ${first}`);
    holder.capacity = Number(m[1]);
    return holder;
  }

  async #growHolder(holder: Holder, target: number): Promise<void> {
    holder.child.stdin!.write(`grow ${target}\n`);
    const answer = await nextLine(holder.lines);
    if (answer !== `ready ${target}`) throw new Error(`conn-holder: ${answer}`);
    holder.held = target;
  }
}

function nextLine(lines: Interface): Promise<string> {
  return new Promise((resolve, reject) => {
    const onLine = (line: string) => { cleanup(); resolve(line); };
    const onClose = () => { cleanup(); reject(new Error("conn-holder exited")); };
    const cleanup = () => { lines.off("line", onLine); lines.off("close", onClose); };
    lines.on("line", onLine);
    lines.on("close", onClose);
  });
}
