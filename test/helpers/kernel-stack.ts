/**
 * The kernel tests' fixtures: a tracker stack, a test network and a peer, each torn down with the
 * test that made it.
 */
import { createLogger } from "../../plugin/log.ts";
import { connectionKey } from "../../plugin/model/connection.ts";
import { defaultStackConfig, startTrackerStack, type StackConfig, type TrackerStack } from "../../plugin/plugin.ts";
import { createTestNetwork, type TestNetwork } from "./netns.ts";
import type { Peer } from "./peers.ts";

export type Tap = { teardown(fn: () => unknown): void };

const silent = createLogger("silent");

export async function stackFor(t: Tap, config: Partial<StackConfig>): Promise<TrackerStack> {
  const stack = await startTrackerStack({ ...defaultStackConfig, ...config }, silent);
  t.teardown(() => stack.stop());
  return stack;
}

/** `tag` keeps the namespace names of one test file apart from another's. */
export function networkFor(t: Tap, tag: string): TestNetwork {
  const net = createTestNetwork(tag);
  t.teardown(() => net.destroy());
  return net;
}

export async function peerFor(t: Tap, started: Peer | Promise<Peer>): Promise<Peer> {
  const p = await started;
  t.teardown(() => p.stop());
  return p;
}

/**
 * The keys of both ends of connections from b to a's `host`:`port`, one pair per client port.
 * Tests compare exact keys: Linux hands the same ephemeral port to connections towards different
 * destinations, so a port alone does not name a connection.
 */
export function bothEndsKeys(net: TestNetwork, host: string, port: number, clientPorts: number[]): string[] {
  const clientHost = host === net.a.ipv4 ? net.b.ipv4 : net.b.ipv6;
  return clientPorts.flatMap((p) => [
    connectionKey({ netns: net.b.netns, localAddress: clientHost, localPort: p, remoteAddress: host, remotePort: port }),
    connectionKey({ netns: net.a.netns, localAddress: host, localPort: port, remoteAddress: clientHost, remotePort: p }),
  ]);
}
