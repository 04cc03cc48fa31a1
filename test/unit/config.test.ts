import t from "tap";
import { parseConfig } from "../../plugin/config.ts";

t.test("defaults, environment, and flags that win over it", async (t) => {
  const defaults = parseConfig([], {});
  t.match(defaults, { source: "auto", grpcSocket: "/var/run/scope/endpoint-reporter.sock", pluginsRoot: "/var/run/scope/plugins", pluginId: "endpoint-reporter", scopePlugin: true, maxConnections: 65536, clientExpiryMs: 120000, ringBufferBytes: 4194304 });
  const fromEnv = parseConfig([], { ENDPOINT_REPORTER_SOURCE: "procfs", ENDPOINT_REPORTER_MAX_CONNECTIONS: "1000", SCOPE_HOSTNAME: "node-7" });
  t.match(fromEnv, { source: "procfs", maxConnections: 1000, hostId: "node-7" });
  const flagWins = parseConfig(["--source", "ebpf", "--no-scope-plugin", "--host-id", "h1"], { ENDPOINT_REPORTER_SOURCE: "procfs", SCOPE_HOSTNAME: "node-7" });
  t.match(flagWins, { source: "ebpf", scopePlugin: false, hostId: "h1" });
});

for (const [args, message] of [
  [["--source", "kprobe"], /--source must be auto, ebpf or procfs/],
  [["--max-connections", "0"], /--max-connections must be an integer >= 1/],
  [["--max-connections", "12abc"], /--max-connections must be an integer/],
  [["--ring-buffer-bytes", "5000"], /--ring-buffer-bytes must be a power of two/],
  [["--plugin-id", "bad id"], /not a valid Scope plugin id/],
  [["--log-level", "loud"], /--log-level must be/],
  [["--unknown"], /Unknown option/],
] as const) {
  t.test(`refuses ${args.join(" ")} with ERR_CONFIG`, async (t) => {
    t.throws(() => parseConfig([...args], {}), { code: "ERR_CONFIG", message });
  });
}
