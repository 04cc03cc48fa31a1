/** Builds and runs go-report-client (scripts/bench/go-report-client/main.go): Report as a Go probe times it. */
import { execFileSync, spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isStale } from "./holders.ts";
import { WARMUP_MS } from "./timing.ts";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");

export interface GoReportTimes {
  n: number;
  p50: number;
  p99: number;
  connections: number;
  bytes: number;
}

/** The client's path, built when missing or older than its sources or the proto; an Error when it cannot be. */
export function ensureGoReportClient(): string | Error {
  const binary = join(root, "build", "bench", "go-report-client");
  const sources = [join(here, "go-report-client", "main.go"), join(root, "proto", "endpoint_reporter.proto"), join(here, "build-go-client.sh")];
  if (!isStale(binary, sources)) return binary;
  const built = spawnSync("bash", [join(here, "build-go-client.sh"), dirname(binary)], { stdio: ["ignore", "inherit", "pipe"], encoding: "utf8" });
  if (built.status !== 0) return new Error(`build-go-client.sh failed: ${built.stderr.trim().split("\n").at(-1) ?? built.status}`);
  return binary;
}

/** `samples` sequential Reports after the same warm-up as measure()'s, timed inside the Go process. */
export function goReportTimes(binary: string, socket: string, samples: number, clientId: string): GoReportTimes {
  const line = execFileSync(binary, ["-socket", socket, "-n", String(samples), "-warm", `${WARMUP_MS}ms`, "-client-id", clientId], { encoding: "utf8", timeout: 600_000 });
  const parsed = JSON.parse(line) as { n: number; p50_ms: number; p99_ms: number; connections: number; bytes: number };
  return { n: parsed.n, p50: parsed.p50_ms, p99: parsed.p99_ms, connections: parsed.connections, bytes: parsed.bytes };
}
