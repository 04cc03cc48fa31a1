/**
 * Report decode: plugin/client's ReportDecoder against the generated EndpointReport.decode (the
 * reference, same run, same bytes), at 10k and 100k connections, in a process doing nothing else.
 * Two shapes: a host's (a few hundred distinct addresses, a few process names) and the worst case
 * for the decoder's string cache (every local address distinct).
 *
 *   node --expose-gc --import tsx scripts/bench/report-decode.ts [--sizes 10000,100000] [--samples 50]
 */
import { parseArgs } from "node:util";
import { ReportDecoder } from "../../plugin/client/report-decoder.ts";
import { type Connection, Direction, EndpointReport, Source } from "../../plugin/generated/endpoint_reporter.ts";

const { values } = parseArgs({ options: { sizes: { type: "string", default: "10000,100000" }, samples: { type: "string", default: "50" } } });
const sizes = values.sizes.split(",").map(Number);
const samples = Number(values.samples);

function connections(n: number, distinct: boolean): Connection[] {
  return Array.from({ length: n }, (_, i) => ({
    localAddress: distinct ? `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` : `10.1.0.${i % 8}`,
    localPort: 1024 + (i % 60_000),
    remoteAddress: i % 4 === 0 ? `fd00::${(i % 300).toString(16)}` : `10.2.${(i >> 8) % 2}.${i % 250}`,
    remotePort: [80, 443, 5432, 6379][i % 4],
    networkNamespace: 4_026_531_840 + (i % 40),
    pid: 1000 + (i % 120),
    comm: ["nginx", "postgres", "curl", "redis-server", "java"][i % 5],
    direction: i % 2 ? Direction.DIRECTION_INCOMING : Direction.DIRECTION_OUTGOING,
    closed: i % 20 === 0,
    source: Source.SOURCE_EBPF,
    natLocalAddress: "",
    natLocalPort: 0,
    natRemoteAddress: "",
    natRemotePort: 0,
  }));
}

/** Median of `samples` decodes, each after the previous one's garbage is gone. */
function median(decode: () => unknown): number {
  decode();
  const ms: number[] = [];
  for (let i = 0; i < samples; i++) {
    (globalThis as { gc?: () => void }).gc?.();
    const t0 = performance.now();
    decode();
    ms.push(performance.now() - t0);
  }
  return ms.sort((a, b) => a - b)[Math.floor(samples / 2)];
}

console.log("connections | shape                   | generated p50 | ReportDecoder p50 | generated / ReportDecoder");
for (const n of sizes) {
  for (const distinct of [false, true]) {
    const bytes = Buffer.from(EndpointReport.encode({ hostId: "host", connections: connections(n, distinct), status: undefined, droppedClosed: 0, firstReport: false }).finish());
    const decoder = new ReportDecoder();
    const generated = median(() => EndpointReport.decode(bytes));
    const fast = median(() => decoder.decode(bytes));
    const shape = distinct ? "every local addr unique" : "host-like";
    console.log(`${String(n).padEnd(11)} | ${shape.padEnd(23)} | ${generated.toFixed(2).padStart(10)} ms | ${fast.toFixed(2).padStart(14)} ms | x${(generated / fast).toFixed(2)}`);
  }
}
