/** Reading the allocator policy from GLIBC_TUNABLES, and composing it for a plugin process. */
import t from "tap";
import { allocatorPolicy, pluginGlibcTunables, withPluginTunables } from "../../plugin/runtime/allocator-policy.ts";

t.test("the plugin's own tunables set both thresholds, as name=value pairs", async (t) => {
  t.match(pluginGlibcTunables(), /^([a-z_.]+=\d+)(:[a-z_.]+=\d+)*$/);
  t.ok(allocatorPolicy({ GLIBC_TUNABLES: pluginGlibcTunables() }).keepsFreedMemory);
});

t.test("unset, empty or one threshold alone: glibc's defaults still return freed memory", async (t) => {
  t.same(allocatorPolicy({}), { glibcTunables: undefined, keepsFreedMemory: false });
  t.equal(allocatorPolicy({ GLIBC_TUNABLES: "" }).keepsFreedMemory, false);
  t.equal(allocatorPolicy({ GLIBC_TUNABLES: "glibc.malloc.trim_threshold=1" }).keepsFreedMemory, false);
  t.equal(allocatorPolicy({ GLIBC_TUNABLES: "glibc.malloc.mmap_threshold=1:glibc.malloc.arena_max=2" }).keepsFreedMemory, false);
});

t.test("both thresholds set by someone else, with other tunables around them: in effect", async (t) => {
  const tunables = "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=1048576:glibc.malloc.mmap_threshold=1048576";
  t.same(allocatorPolicy({ GLIBC_TUNABLES: tunables }), { glibcTunables: tunables, keepsFreedMemory: true });
});

t.test("a caller's tunables come after the plugin's, so that theirs win", async (t) => {
  t.equal(withPluginTunables(undefined), pluginGlibcTunables());
  t.equal(withPluginTunables(""), pluginGlibcTunables());
  t.equal(withPluginTunables("glibc.malloc.trim_threshold=0"), `${pluginGlibcTunables()}:glibc.malloc.trim_threshold=0`);
});
