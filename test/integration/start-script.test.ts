/**
 * The README's start command, scripts/start.sh: it brings the plugin up (setup first, nothing left
 * to install here), with the allocator policy in the process's environment ahead of the caller's
 * tunables and the heap policy on node's command line; a plugin started without either says so in
 * a warning and serves all the same.
 */
import t from "tap";
import { type EndpointReport, Source } from "../../plugin/generated/endpoint_reporter.ts";
import { pluginGlibcTunables } from "../../plugin/runtime/allocator-policy.ts";
import { heapPolicy, pluginV8Flags } from "../../plugin/runtime/heap-policy.ts";
import { startPlugin } from "../helpers/plugin-child.ts";
import { unary } from "../helpers/server-harness.ts";

const WARNING = /"level":"warn","msg":"glibc hands freed memory back at once/;
const HEAP_WARNING = /"level":"warn","msg":"V8 collects a small heap in full/;

t.test("scripts/start.sh: the plugin serves, with the plugin's tunables first and the caller's after", async (t) => {
  const callers = "glibc.malloc.arena_max=4";
  const plugin = await startPlugin({ runtime: "start-script", env: { GLIBC_TUNABLES: callers }, readyTimeoutMs: 120_000 });
  t.teardown(() => plugin.cleanup());
  const expected = `${pluginGlibcTunables()}:${callers}`;
  // As the serving process sees its environment (/proc/PID/environ will not do: glibc cuts the
  // original string up while it parses it).
  t.equal(plugin.ready.glibcTunables, expected, "in the ready record");
  t.notOk(plugin.logs.some((l) => WARNING.test(l)), "no allocator warning");
  const floor = heapPolicy(pluginV8Flags()).oldSpaceFloorMiB;
  t.ok(floor !== undefined && floor > 0, "plugin/runtime/v8-flags sets a floor");
  t.equal(plugin.ready.v8OldSpaceFloorMiB, floor, "node got the heap floor");
  t.notOk(plugin.logs.some((l) => HEAP_WARNING.test(l)), "no heap warning");
  const client = plugin.client();
  t.teardown(() => client.close());
  const report = await unary<EndpointReport>((cb) => client.report({ clientId: "start-script" }, cb));
  t.equal(report.status?.source, Source.SOURCE_EBPF);
  const stopped = await plugin.stop("SIGTERM");
  t.equal(stopped.code, 0);
});

t.test("started without the tunables or the V8 flags: a warning for each that names the fix, and it serves all the same", async (t) => {
  const plugin = await startPlugin({ runtime: "node", env: { GLIBC_TUNABLES: "" }, v8Flags: [] });
  t.teardown(() => plugin.cleanup());
  const warning = plugin.logs.find((l) => WARNING.test(l));
  t.ok(warning, "warned");
  t.match(warning, /scripts\/start\.sh/);
  const heapWarning = plugin.logs.find((l) => HEAP_WARNING.test(l));
  t.ok(heapWarning, "warned about the heap");
  t.match(heapWarning, /scripts\/start\.sh.*plugin\/runtime\/v8-flags/);
  t.equal(plugin.ready.v8OldSpaceFloorMiB, undefined);
  const client = plugin.client();
  t.teardown(() => client.close());
  const report = await unary<EndpointReport>((cb) => client.report({ clientId: "no-tunables" }, cb));
  t.equal(report.status?.source, Source.SOURCE_EBPF);
});
