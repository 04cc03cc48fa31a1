/**
 * The one client found to abort the plugin under Deno (denoland/deno#36788's assertion,
 * "find_stream_on_goaway_func: Assertion `stream->closed_next == NULL' failed", SIGABRT):
 * nghttp2's h2load (scripts/bench/h2load.ts) making K Reports on one connection and closing it
 * (GOAWAY, then the socket), against a plugin holding N real connections. scripts/deno-soak.ts's
 * grpc-js and node:http2 clients, on a small table, never set it off.
 *
 *   node --import tsx scripts/deno-h2load-abort.ts [--runtime deno|node] [--connections 10000] [--reports 100] [--runs 5] [--per-plugin 3]
 *
 * Each of `--runs` fresh plugins gets up to `--per-plugin` h2load connections (half a second
 * apart); the first one after which the plugin is dead counts as an abort. Prints aborts per fresh
 * plugin and per h2load connection, with the plugin's last stderr line. Needs root.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { type Runtime, startPlugin } from "../test/helpers/plugin-child.ts";
import { ensureH2load, h2loadTimes, reportTarget } from "./bench/h2load.ts";
import { ConnectionHolders, ensureBenchHelpers, heldTablePluginArgs } from "./bench/holders.ts";

const { values } = parseArgs({
  options: {
    runtime: { type: "string", default: "deno" },
    connections: { type: "string", default: "10000" },
    reports: { type: "string", default: "100" },
    runs: { type: "string", default: "5" },
    "per-plugin": { type: "string", default: "3" },
  },
});
const [connections, reports, runs, perPlugin] = [values.connections, values.reports, values.runs, values["per-plugin"]].map(Number);
const h2load = ensureH2load();
if (h2load instanceof Error) throw h2load;
const holders = new ConnectionHolders(join(ensureBenchHelpers(), "conn-holder"));
await holders.grow(Math.ceil(connections / 2));
let aborts = 0;
let h2loadConnections = 0;
try {
  for (let run = 1; run <= runs; run++) {
    const plugin = await startPlugin({
      runtime: values.runtime as Runtime,
      args: heldTablePluginArgs(connections),
      readyTimeoutMs: 180_000,
    });
    try {
      let outcome = "alive";
      for (let k = 1; k <= perPlugin; k++) {
        h2loadConnections++;
        let failure: unknown;
        try {
          h2loadTimes(h2load, reportTarget(plugin.grpcSocket, "abort-probe"), reports, 0);
        } catch (error) {
          failure = error; // a plugin that died mid-run: counted below
        }
        await sleep(500);
        if (plugin.alive() && failure !== undefined) throw failure;
        if (!plugin.alive()) {
          const exit = await plugin.exited;
          outcome = `died after h2load connection ${k}: code ${exit.code}, signal ${exit.signal}: ${plugin.logs.at(-1) ?? ""}`;
          aborts++;
          break;
        }
      }
      console.log(`plugin ${run} (${values.runtime}, ${connections} connections, ${reports} Reports per h2load connection): ${outcome}`);
    } finally {
      await plugin.stop("SIGTERM", 10_000);
      await plugin.cleanup();
    }
  }
} finally {
  await holders.stop();
}
console.log(`${aborts} aborts in ${runs} fresh plugins, ${h2loadConnections} h2load connections (${values.runtime})`);
