/**
 * The kernel tests' fixtures: a tracker stack, a test network and a peer, each torn down with the
 * test that made it.
 */
import { createLogger } from "../../plugin/log.ts";
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
