/**
 * Two test hosts in network namespaces of our own, joined by a veth pair, with IPv4 and IPv6
 * addresses that exist only inside them. Everything is removed by `destroy()`.
 */
import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";

export interface TestHost {
  name: string;
  ipv4: string;
  ipv6: string;
  /** Network namespace inode, as the kernel and /proc/PID/ns/net report it. */
  netns: number;
}

export interface TestNetwork {
  a: TestHost;
  b: TestHost;
  destroy(): void;
}

function ip(...args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

let counter = 0;

/** `subnet` (10.N.0.0/24, fd00:N::/64) for a test whose addresses must be its own machine-wide. */
export function createTestNetwork(tag = "t", subnet = 100 + ((counter + 1) % 100)): TestNetwork {
  const id = `${tag}${process.pid % 100000}x${counter++}`;
  const a = `era-${id}`;
  const b = `erb-${id}`;
  const vethA = `va${id}`.slice(0, 15);
  const vethB = `vb${id}`.slice(0, 15);
  const destroy = () => {
    for (const ns of [a, b]) {
      try {
        ip("netns", "del", ns);
      } catch { /* already gone */ }
    }
  };
  try {
    ip("netns", "add", a);
    ip("netns", "add", b);
    ip("link", "add", vethA, "type", "veth", "peer", "name", vethB);
    ip("link", "set", vethA, "netns", a);
    ip("link", "set", vethB, "netns", b);
    const hosts: TestHost[] = [];
    for (const [ns, dev, n] of [[a, vethA, 1], [b, vethB, 2]] as const) {
      ip("-n", ns, "link", "set", "lo", "up");
      ip("-n", ns, "addr", "add", `10.${subnet}.0.${n}/24`, "dev", dev);
      ip("-n", ns, "addr", "add", `fd00:${subnet}::${n}/64`, "dev", dev, "nodad");
      ip("-n", ns, "link", "set", dev, "up");
      hosts.push({ name: ns, ipv4: `10.${subnet}.0.${n}`, ipv6: `fd00:${subnet}::${n}`, netns: statSync(`/run/netns/${ns}`).ino });
    }
    return { a: hosts[0], b: hosts[1], destroy };
  } catch (error) {
    destroy();
    throw error;
  }
}
