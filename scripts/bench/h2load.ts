/**
 * nghttp2's h2load (Debian's nghttp2-client) as the reference client written in C: sequential
 * requests on one connection, each one's latency from h2load's log file. It reads the answer into
 * buffers it reuses, decodes nothing and has no garbage collector, so its figures are the plugin
 * and the transport alone: the floor any client's own figures stand on. gRPC Report over HTTP/2
 * (the request is the gRPC frame of a ReportRequest, the answer's grpc-status unread: each answer's
 * size is checked instead), Scope /report over HTTP/1.1 (--h1).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ReportRequest } from "../../plugin/generated/endpoint_reporter.ts";
import { grpcFrame } from "../../test/helpers/server-harness.ts";
import { type Dist, distribution, WARMUP_MS } from "./timing.ts";

const H2LOAD = "/usr/bin/h2load";

/** h2load's path, installed with apt when missing; an Error when it cannot be. */
export function ensureH2load(): string | Error {
  const installed = () => spawnSync(H2LOAD, ["--version"]).status === 0;
  if (installed()) return H2LOAD;
  process.stderr.write("bench/h2load: installing nghttp2-client\n");
  spawnSync("apt-get", ["update", "-qq"], { stdio: "inherit" });
  const apt = spawnSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "nghttp2-client"], { stdio: ["ignore", "inherit", "pipe"], encoding: "utf8", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  if (apt.status !== 0 || !installed()) return new Error(`apt-get install nghttp2-client failed: ${apt.stderr?.trim().split("\n").at(-1) ?? apt.status}`);
  return H2LOAD;
}

export interface H2loadTarget {
  socket: string;
  /** The request's URL (h2load connects to `socket`, the URL gives the path). */
  url: string;
  /** HTTP/1.1 instead of HTTP/2. */
  h1?: boolean;
  /** A POST body; the request is a GET without one. */
  body?: Uint8Array;
  headers?: readonly string[];
  /** When given, every answer's body must be within 1% of this many bytes. */
  expectBytes?: number;
}

/** The gRPC Report as h2load sends it: POST of one length-prefixed ReportRequest (answers of reportBytes, when given). */
export function reportTarget(socket: string, clientId: string, reportBytes?: number): H2loadTarget {
  return {
    socket,
    url: "http://localhost/scope.endpoint.v1.EndpointReporter/Report",
    body: grpcFrame(ReportRequest.encode({ clientId }).finish()),
    headers: ["content-type: application/grpc", "te: trailers"],
    ...(reportBytes === undefined ? {} : { expectBytes: 5 + reportBytes }),
  };
}

/** `samples` sequential requests, after `warmUpMs` of the same on a connection of their own (as measure() warms up; 0: none). */
export function h2loadTimes(binary: string, target: H2loadTarget, samples: number, warmUpMs = WARMUP_MS): Dist {
  const dir = mkdtempSync(join(tmpdir(), "bench-h2load-"));
  try {
    const args = [`--base-uri=unix:${target.socket}`, "--clients=1", "--max-concurrent-streams=1"];
    if (target.h1) args.push("--h1");
    if (target.body !== undefined) {
      writeFileSync(join(dir, "body"), target.body);
      args.push(`--data=${join(dir, "body")}`);
    }
    for (const header of target.headers ?? []) args.push(`--header=${header}`);
    if (warmUpMs > 0) run(binary, [...args, `--duration=${Math.ceil(warmUpMs / 1000)}`, target.url]);
    const log = join(dir, "log");
    const summary = run(binary, [...args, `--requests=${samples}`, `--log-file=${log}`, target.url]);
    if (target.expectBytes !== undefined) {
      const dataBytes = Number(/^traffic: .*?, (\d+|[\d.]+\w*) \((\d+)\) data$/m.exec(summary)?.[2]);
      const perAnswer = dataBytes / samples;
      if (!(Math.abs(perAnswer - target.expectBytes) <= target.expectBytes / 100)) {
        throw new Error(`h2load got ${perAnswer} bytes an answer from ${target.url}, expected ${target.expectBytes}`);
      }
    }
    // Each line: start time (µs since the epoch), status, latency (µs).
    const rows = readFileSync(log, "utf8").trim().split("\n").map((line) => line.split("\t").map(Number));
    const failed = rows.filter(([, status]) => status !== 200);
    if (rows.length !== samples || failed.length > 0) throw new Error(`h2load: ${rows.length} of ${samples} requests logged, ${failed.length} not 200`);
    return distribution(rows.map(([, , latencyUs]) => latencyUs / 1000));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function run(binary: string, args: string[]): string {
  const result = spawnSync(binary, args, { encoding: "utf8", timeout: 600_000 });
  const ok = result.status === 0 && /^requests: (\d+) total, \d+ started, \d+ done, \1 succeeded, 0 failed, 0 errored/m.test(result.stdout);
  if (!ok) throw new Error(`h2load ${args.join(" ")} failed (${result.status}): ${(result.stdout + result.stderr).trim().split("\n").slice(-4).join(" | ")}`);
  return result.stdout;
}
