/**
 * A kernel without conntrack at all (nf_conntrack is a module there and not loaded), which the host
 * cannot show (its conntrack is built in): the VM guests of the kernel matrix are such hosts, since
 * they boot Debian's kernels without their modules. Run there only (scripts/vm/kernel-tests.sh; a
 * guest test is named *.guest.ts so that the host's `npm test` leaves it out).
 * - eBPF and /proc report as usual, with no NAT fields;
 * - the status, the log and the Scope plugin's description say that NAT mapping is off and why.
 */
import t from "tap";
import { existsSync } from "node:fs";
import type { ServiceError } from "@grpc/grpc-js";
import { Direction, type EndpointReport, Source, type TrackerStatus } from "../../plugin/generated/endpoint_reporter.ts";
import { createTestNetwork } from "../helpers/netns.ts";
import { startClient, startServer } from "../helpers/peers.ts";
import { startPlugin } from "../helpers/plugin-child.ts";
import { httpGet } from "../helpers/server-harness.ts";
import { waitFor } from "../helpers/wait.ts";

const CONNTRACK_SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_events";

t.test("this kernel has no conntrack (the premise of this file)", async (t) => {
  t.notOk(existsSync(CONNTRACK_SYSCTL), `${CONNTRACK_SYSCTL} is absent: nf_conntrack is not loaded in this guest`);
});

for (const source of ["ebpf", "procfs"] as const) {
  t.test(`--source ${source} without conntrack: both ends reported, no NAT fields, the status says why NAT mapping is off`, async (t) => {
    const net = createTestNetwork("nc");
    t.teardown(() => net.destroy());
    const plugin = await startPlugin({ runtime: "node", readyTimeoutMs: 300_000, args: ["--source", source, "--proc-poll-interval-ms", "1000"] });
    t.teardown(() => plugin.cleanup());
    const client = plugin.client();
    t.teardown(() => client.close());
    const status = await new Promise<TrackerStatus>((resolve, reject) => client.getStatus({}, (e: ServiceError | null, r?: TrackerStatus) => (e ? reject(e) : resolve(r!))));
    t.equal(status.source, source === "ebpf" ? Source.SOURCE_EBPF : Source.SOURCE_PROCFS);
    t.match(status.conntrack, { enabled: false, reason: /NAT mapping off: conntrack is not available \(nf_conntrack not loaded\?\)/ });
    t.ok(plugin.logs.some((l) => /conntrack NAT mapping off/.test(l) && /not available/.test(l)), "logged once at start, with the reason");

    const server = await startServer(net.a.name, net.a.ipv4, 8090, "hold");
    t.teardown(() => server.stop());
    const peer = startClient(net.b.name, net.a.ipv4, 8090, 1, true);
    t.teardown(() => peer.stop());
    const port = Number(await peer.line());
    let rows: EndpointReport["connections"] = [];
    await waitFor("both ends", () => {
      void new Promise<EndpointReport>((resolve, reject) => client.report({ clientId: "nc" }, (e: ServiceError | null, r?: EndpointReport) => (e ? reject(e) : resolve(r!))))
        .then((r) => (rows = r.connections.filter((c) => c.localPort === port || c.remotePort === port)), () => undefined);
      return rows.length === 2;
    }, 120_000, 250);
    t.match(rows.find((c) => c.localPort === port), { pid: peer.pid, direction: Direction.DIRECTION_OUTGOING, natLocalAddress: "", natRemoteAddress: "" });
    t.match(rows.find((c) => c.remotePort === port), { pid: server.pid, direction: Direction.DIRECTION_INCOMING, natLocalAddress: "", natRemoteAddress: "" });
    const body = JSON.parse((await httpGet(plugin.scopeSocket, "/report?api_version=1&probe_id=nc")).body);
    t.match(body.Plugins[0].description, /NAT mapping off: conntrack is not available/, "the Scope plugin description says it");
  });
}
