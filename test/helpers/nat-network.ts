/**
 * A host that NATs, the way kube-proxy does, built from network namespaces of our own:
 * `client` -> `router` -> `server`, where `router` plays the host (the plugin runs in it and reads
 * its conntrack) and routes between two veth pairs. `dnat()` gives a virtual address inside the
 * test's own 10.N.0.0/16 (IPv4) and fd00:N::/48 (IPv6) the kube-proxy treatment (a chain of ours
 * jumped to from PREROUTING, DNAT to the server); `masquerade()` SNATs the client subnet on its
 * way to the server. Rules live in our router namespace (never the machine's), in chains named
 * after this helper ("conntrack-..."), and are deleted by `destroy()` before the namespaces.
 */
import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";

export interface NatHost {
  name: string;
  ipv4: string;
  ipv6: string;
  netns: number;
}

export interface NatNetwork {
  router: NatHost & { toClient4: string; toServer4: string; toClient6: string; toServer6: string };
  client: NatHost;
  server: NatHost;
  /** Subnet number N of 10.N.0.0/16. */
  subnet: number;
  /** A Service address (virtual, inside our subnet): port `port` DNATed to the server's `targetPort`. */
  dnat(family: 4 | 6, port: number, targetPort: number): string;
  /** The client subnet leaves for the server masqueraded as the router's server-side address. */
  masquerade(): void;
  /** `ip netns exec <router> sh -c` */
  inRouter(...args: string[]): string;
  destroy(): void;
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

let counter = 0;

export function createNatNetwork(): NatNetwork {
  const id = `${process.pid % 10000}x${counter++}`;
  const subnet = 20 + ((process.pid + counter * 7) % 60);
  const router = `ctr-${id}`;
  const client = `ctc-${id}`;
  const server = `cts-${id}`;
  const rules: Array<() => void> = [];
  const ns = (name: string, ...args: string[]) => run("ip", ["netns", "exec", name, ...args]);
  const destroy = () => {
    for (const undo of rules.reverse()) {
      try {
        undo();
      } catch { /* namespace already gone */ }
    }
    rules.length = 0;
    for (const name of [client, server, router]) {
      try {
        run("ip", ["netns", "del", name]);
      } catch { /* already gone */ }
    }
  };
  try {
    for (const name of [router, client, server]) {
      run("ip", ["netns", "add", name]);
      run("ip", ["-n", name, "link", "set", "lo", "up"]);
    }
    const link = (peer: string, side: number) => {
      const inPeer = `ct${side}p${id}`.slice(0, 15);
      const inRouter = `ct${side}r${id}`.slice(0, 15);
      run("ip", ["link", "add", inPeer, "type", "veth", "peer", "name", inRouter]);
      run("ip", ["link", "set", inPeer, "netns", peer]);
      run("ip", ["link", "set", inRouter, "netns", router]);
      run("ip", ["-n", peer, "addr", "add", `10.${subnet}.${side}.2/24`, "dev", inPeer]);
      run("ip", ["-n", peer, "addr", "add", `fd00:${subnet}:${side}::2/64`, "dev", inPeer, "nodad"]);
      run("ip", ["-n", router, "addr", "add", `10.${subnet}.${side}.1/24`, "dev", inRouter]);
      run("ip", ["-n", router, "addr", "add", `fd00:${subnet}:${side}::1/64`, "dev", inRouter, "nodad"]);
      run("ip", ["-n", peer, "link", "set", inPeer, "up"]);
      run("ip", ["-n", router, "link", "set", inRouter, "up"]);
      run("ip", ["-n", peer, "route", "add", "default", "via", `10.${subnet}.${side}.1`]);
      run("ip", ["-n", peer, "-6", "route", "add", "default", "via", `fd00:${subnet}:${side}::1`]);
      return inRouter;
    };
    link(client, 1);
    const toServer = link(server, 2);
    ns(router, "sysctl", "-qw", "net.ipv4.ip_forward=1");
    ns(router, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1");
    const host = (name: string, side: number): NatHost => ({
      name, ipv4: `10.${subnet}.${side}.2`, ipv6: `fd00:${subnet}:${side}::2`, netns: statSync(`/run/netns/${name}`).ino,
    });
    const chain = (tool: string, table: string, name: string, hook: string) => {
      ns(router, tool, "-t", table, "-N", name);
      ns(router, tool, "-t", table, "-A", hook, "-j", name);
      rules.push(() => {
        ns(router, tool, "-t", table, "-D", hook, "-j", name);
        ns(router, tool, "-t", table, "-F", name);
        ns(router, tool, "-t", table, "-X", name);
      });
    };
    let services = 0;
    const chains = new Set<string>();
    return {
      router: { ...host(router, 0), ipv4: `10.${subnet}.1.1`, ipv6: `fd00:${subnet}:1::1`, toClient4: `10.${subnet}.1.1`, toServer4: `10.${subnet}.2.1`, toClient6: `fd00:${subnet}:1::1`, toServer6: `fd00:${subnet}:2::1` },
      client: host(client, 1),
      server: host(server, 2),
      subnet,
      dnat(family, port, targetPort) {
        const tool = family === 4 ? "iptables" : "ip6tables";
        if (!chains.has(`${tool}-svc`)) {
          chain(tool, "nat", "conntrack-SERVICES", "PREROUTING");
          chains.add(`${tool}-svc`);
        }
        services++;
        const vip = family === 4 ? `10.${subnet}.3.${100 + services}` : `fd00:${subnet}:3::${100 + services}`;
        const target = family === 4 ? `10.${subnet}.2.2:${targetPort}` : `[fd00:${subnet}:2::2]:${targetPort}`;
        ns(router, tool, "-t", "nat", "-A", "conntrack-SERVICES", "-d", vip, "-p", "tcp", "--dport", String(port), "-j", "DNAT", "--to-destination", target);
        return vip;
      },
      masquerade() {
        for (const [tool, src] of [["iptables", `10.${subnet}.1.0/24`], ["ip6tables", `fd00:${subnet}:1::/64`]] as const) {
          chain(tool, "nat", "conntrack-MASQ", "POSTROUTING");
          ns(router, tool, "-t", "nat", "-A", "conntrack-MASQ", "-s", src, "-o", toServer, "-j", "MASQUERADE");
        }
      },
      inRouter: (...args) => ns(router, ...args),
      destroy,
    };
  } catch (error) {
    destroy();
    throw error;
  }
}
