/**
 * The plugin without BPF privileges (capabilities dropped from its bounding set): it must run on
 * /proc, say why in its status, and still report real connections with the right pids and directions.
 */
import t from "tap";
import type { ServiceError } from "@grpc/grpc-js";
import { Direction, type EndpointReport, Source, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { createTestNetwork } from "../helpers/netns.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { startPlugin } from "../helpers/plugin-child.ts";
import { waitFor } from "../helpers/wait.ts";

t.test("without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN the plugin tracks by /proc and says why", async (t) => {
  const net = createTestNetwork("p");
  t.teardown(() => net.destroy());
  const plugin = await startPlugin({
    runtime: "node",
    wrapper: ["setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin", "--"],
    args: ["--proc-poll-interval-ms", "300", "--ebpf-retry-ms", "600000"],
  });
  t.teardown(() => plugin.cleanup());
  const client = plugin.client();
  t.teardown(() => client.close());
  const status = () => new Promise<TrackerStatus>((resolve, reject) => client.getStatus({}, (e: ServiceError | null, r?: TrackerStatus) => (e ? reject(e) : resolve(r!))));
  const report = () => new Promise<EndpointReport>((resolve, reject) => client.report({ clientId: "" }, (e: ServiceError | null, r?: EndpointReport) => (e ? reject(e) : resolve(r!))));

  const live = await status();
  t.equal(live.source, Source.SOURCE_PROCFS);
  t.match(live.reason, /eBPF failed to start, fell back: ERR_BPF_PERMISSION/, "the reason names the missing privilege");
  t.equal(live.counters?.fallbacks, 1);

  const server = await startServer(net.a.name, net.a.ipv6, 8090, "hold");
  t.teardown(() => server.stop());
  const peer = startClient(net.b.name, net.a.ipv6, 8090, 1, true);
  t.teardown(() => peer.stop());
  const port = Number(await peer.line());

  let seen: EndpointReport["connections"] = [];
  await waitFor("both ends in a report", () => {
    report().then((r) => (seen = r.connections.filter((c) => c.localPort === port || c.remotePort === port)), () => undefined);
    return seen.length === 2;
  }, 10_000, 200);
  t.match(seen.find((c) => c.localPort === port), {
    localAddress: net.b.ipv6, remoteAddress: net.a.ipv6, remotePort: 8090, networkNamespace: net.b.netns,
    pid: peer.pid, comm: peer.comm(), direction: Direction.DIRECTION_OUTGOING, source: Source.SOURCE_PROCFS,
  });
  t.match(seen.find((c) => c.remotePort === port), {
    localAddress: net.a.ipv6, localPort: 8090, networkNamespace: net.a.netns,
    pid: server.pid, comm: server.comm(), direction: Direction.DIRECTION_INCOMING, source: Source.SOURCE_PROCFS,
  });
});
