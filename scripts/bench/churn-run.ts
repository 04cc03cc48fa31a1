/**
 * What the eBPF churn benchmarks share (ebpf-churn.ts, bpf-run-time.ts): the loopback churn
 * generator (build/bench/churn) and the event consumers it runs beside (the floor consumer, the
 * plugin's tracker process), each started and awaited until it says it is attached.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { createInterface } from "node:readline";
import { packageRoot } from "../../plugin/package-root.ts";

export const churnBin = `${packageRoot}build/bench/churn`;
export const floorBin = `${packageRoot}build/bench/floor-consumer`;
const floorSources = [`${packageRoot}scripts/bench/floor-consumer.c`, `${packageRoot}native/src/attach_plan.c`, `${packageRoot}native/src/attach_plan.h`];

/** Builds churn and the floor consumer (scripts/bench/build.sh) when missing or older than their sources. */
export function ensureChurnHelpers(): void {
  const stale = (bin: string, sources: string[]) => !existsSync(bin) || sources.some((src) => statSync(src).mtimeMs > statSync(bin).mtimeMs);
  if (!existsSync(churnBin) || stale(floorBin, floorSources)) execFileSync("bash", [`${packageRoot}scripts/bench/build.sh`], { stdio: "inherit" });
}

/** Connect/accept/close at maximum rate for `seconds`; the generator's own figures. */
export function runChurn(seconds: number): { connections: number } {
  return JSON.parse(execFileSync(churnBin, ["-d", String(seconds)], { encoding: "utf8" }).trim().split("\n").pop()!);
}

export interface Consumer {
  pid: number;
  /** SIGTERM, then the last JSON line the consumer printed on stdout (its figures). */
  stop(): Promise<Record<string, number>>;
}

export async function startConsumer(command: string, args: string[], readyOn: "stdout" | "stderr", readyText: RegExp): Promise<Consumer> {
  const child = spawn(command, args, { cwd: packageRoot, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  // Registered at spawn, so an exit is never missed, however early it comes.
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: readyOn === "stdout" ? child.stdout : child.stderr });
    lines.on("line", (line) => readyText.test(line) && resolve());
    void exited.then((code) => reject(new Error(`${command} exited ${code} before it was ready: ${out}${err}`)));
  });
  return {
    pid: child.pid!,
    async stop() {
      child.kill("SIGTERM");
      const code = await exited;
      const line = out.trim().split("\n").filter((l) => l.startsWith("{")).pop();
      if (line === undefined) throw new Error(`${command} exited ${code} without its figures: ${err}`);
      return JSON.parse(line);
    },
  };
}
