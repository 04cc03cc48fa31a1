/** Reading the V8 heap floor from a runtime's command line, and the plugin's own flags. */
import t from "tap";
import { heapPolicy, pluginV8Flags, processCommandLine } from "../../plugin/runtime/heap-policy.ts";

t.test("the plugin's own flags set a floor", async (t) => {
  const flags = pluginV8Flags();
  t.ok(flags.length > 0);
  for (const flag of flags) t.match(flag, /^--[a-z][a-z0-9-]*(=\S+)?$/, "one node/V8 flag per line");
  t.ok((heapPolicy(flags).oldSpaceFloorMiB ?? 0) > 0);
});

t.test("node's form, V8's underscore spelling, and Deno's comma-separated --v8-flags", async (t) => {
  t.same(heapPolicy(["node", "--initial-old-space-size=64", "--import", "tsx", "plugin/main.ts"]), { oldSpaceFloorMiB: 64 });
  t.same(heapPolicy(["node", "--initial_old_space_size=32", "plugin/main.ts"]), { oldSpaceFloorMiB: 32 });
  t.same(heapPolicy(["deno", "run", "--v8-flags=--max-semi-space-size=16,--initial-old-space-size=128", "--allow-all", "plugin/main.ts"]), { oldSpaceFloorMiB: 128 });
  t.same(heapPolicy(["node", "--initial-old-space-size=64", "--initial-old-space-size=96", "x.ts"]), { oldSpaceFloorMiB: 96 }, "the last one wins, as in V8");
});

t.test("absent, or not a number: no floor", async (t) => {
  t.same(heapPolicy([]), { oldSpaceFloorMiB: undefined });
  t.same(heapPolicy(["node", "--max-old-space-size=4096", "plugin/main.ts"]), { oldSpaceFloorMiB: undefined });
  t.same(heapPolicy(["node", "--initial-old-space-size=", "--initial-old-space-size=lots", "plugin/main.ts"]), { oldSpaceFloorMiB: undefined });
  t.same(heapPolicy(["deno", "run", "--v8-flags=--expose-gc", "plugin/main.ts"]), { oldSpaceFloorMiB: undefined });
});

t.test("this process's command line, runtime flags included", async (t) => {
  const commandLine = processCommandLine();
  t.ok(commandLine.length >= process.execArgv.length + 1);
  for (const flag of process.execArgv) t.ok(commandLine.includes(flag), `has ${flag}`);
});
