/**
 * A faster EndpointReport serializer for the Report method, without touching the generated code.
 *
 * A Report repeats every tracked connection, and converting and protobuf-encoding 100k of them on
 * every call dominated its latency. Connection objects in the table are immutable (a change, such
 * as a close, makes a new object), so the encoded field-2 entries (tag 0x12, varint length,
 * Connection bytes, from the generated Connection.encode) of runs of consecutive connections are
 * kept and reused while the next report has the same objects in the same order. A report is then
 * field 1 (host id) from the generated encoder, the entries, and fields 3..5 from the generated
 * encoder: the same bytes, in the same order, as EndpointReport.encode of the converted message.
 * Runs are cached, not single entries, because copying 100k small arrays (or joining 100k strings)
 * costs tens of milliseconds by itself.
 */
import type { Connection } from "../../model/connection.ts";
import { Connection as WireConnection, EndpointReport, EndpointReporterService } from "../../generated/endpoint_reporter.ts";
import { connectionToWire } from "./convert.ts";
import { translationVersion } from "../../conntrack/active.ts";

const MODEL_CONNECTIONS: unique symbol = Symbol("model connections");

/** An EndpointReport whose connections are still model objects; `connections` converts on first read. */
export interface LazyEndpointReport extends EndpointReport {
  readonly [MODEL_CONNECTIONS]: readonly Connection[];
}

/**
 * The report message for `connections`: its `connections` field is converted only if something
 * reads it (anything but the fast serializer below), so it stays a complete EndpointReport.
 */
export function lazyEndpointReport(fields: Omit<EndpointReport, "connections">, connections: readonly Connection[]): EndpointReport {
  let wire: EndpointReport["connections"] | undefined;
  const report = { ...fields } as EndpointReport;
  Object.defineProperty(report, "connections", {
    enumerable: true,
    configurable: true,
    get: () => (wire ??= connections.map(connectionToWire)),
    set: (value: EndpointReport["connections"]) => {
      wire = value;
      // Once replaced, the model connections no longer describe the message.
      Reflect.deleteProperty(report, MODEL_CONNECTIONS);
    },
  });
  Object.defineProperty(report, MODEL_CONNECTIONS, { value: connections, enumerable: false, configurable: true });
  return report;
}

/** The field-2 entry (tag 0x12, varint length, Connection bytes) of one connection. */
export function connectionEntry(c: Connection): Uint8Array {
  const body = WireConnection.encode(connectionToWire(c)).finish();
  let headLength = 2;
  for (let n = body.length >>> 7; n > 0; n >>>= 7) headLength++;
  const entry = new Uint8Array(headLength + body.length);
  entry[0] = 0x12;
  let at = 1;
  let n = body.length;
  for (; n >= 0x80; n >>>= 7) entry[at++] = (n & 0x7f) | 0x80;
  entry[at++] = n;
  entry.set(body, at);
  return entry;
}

/**
 * A run of consecutive connections and their encoded entries, reused while a report has the same
 * objects in the same order. Runs end where a connection's hash says so (content-defined, on
 * average every RUN_SPREAD connections), so that an insertion or removal only disturbs the run it
 * falls in, rather than shifting every boundary after it.
 */
interface Run {
  connections: readonly Connection[];
  bytes: Buffer;
}

const RUN_SPREAD = 256;

function endsRun(c: Connection): boolean {
  let h = Math.imul(c.localPort ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(c.remotePort + 0x27d4eb2f, 0xc2b2ae35) ^ c.netns;
  for (const text of [c.localAddress, c.remoteAddress]) for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  h ^= h >>> 15;
  return ((h >>> 0) % RUN_SPREAD) === 0;
}

/** Runs by their first connection: the ones the previous report used (only those are kept). */
let previousRuns = new Map<Connection, Run>();
/** A NAT translation that arrived after its connection was encoded makes the cached runs stale. */
let previousTranslationVersion = 0;

/** The concatenated entries of `connections`, from cached runs where the objects are unchanged. */
export function connectionEntries(connections: readonly Connection[]): Buffer[] {
  if (translationVersion() !== previousTranslationVersion) {
    previousTranslationVersion = translationVersion();
    previousRuns = new Map();
  }
  const runs = new Map<Connection, Run>();
  const out: Buffer[] = [];
  let i = 0;
  while (i < connections.length) {
    const first = connections[i];
    const cached = previousRuns.get(first) ?? runs.get(first);
    if (cached !== undefined && cached.connections.length <= connections.length - i) {
      const list = cached.connections;
      let k = 1;
      while (k < list.length && list[k] === connections[i + k]) k++;
      if (k === list.length) {
        runs.set(first, cached);
        out.push(cached.bytes);
        i += k;
        continue;
      }
    }
    const start = i;
    const parts: Uint8Array[] = [];
    let length = 0;
    for (;;) {
      const c = connections[i++];
      const entry = connectionEntry(c);
      parts.push(entry);
      length += entry.length;
      if (i >= connections.length || endsRun(c)) break;
    }
    const bytes = Buffer.allocUnsafeSlow(length);
    let at = 0;
    for (const part of parts) {
      bytes.set(part, at);
      at += part.length;
    }
    const run: Run = { connections: connections.slice(start, i), bytes };
    runs.set(first, run);
    out.push(bytes);
  }
  previousRuns = runs;
  return out;
}

/**
 * Serializes a report, byte-identical to the generated EndpointReport.encode, into one buffer
 * reused by every call (valid until the next call). grpc-js copies the serialized message into
 * its own frame before anything else runs (it has no response compression), so a fresh buffer per
 * Report only added megabytes of external memory per call, and with them full collections.
 */
let scratch = Buffer.allocUnsafeSlow(0);
function serializeIntoScratch(value: EndpointReport): Buffer {
  const parts = reportParts(value);
  if (parts === undefined) return Buffer.from(EndpointReport.encode(value).finish());
  let length = 0;
  for (const part of parts) length += part.length;
  if (scratch.length < length) scratch = Buffer.allocUnsafeSlow(Math.max(length, Math.min(2 * scratch.length, 256 * 1024 * 1024)));
  let at = 0;
  for (const part of parts) {
    scratch.set(part, at);
    at += part.length;
  }
  return scratch.subarray(0, length);
}

/** Field 1, the cached entries, fields 3..5: undefined when the connections are not model objects. */
function reportParts(value: EndpointReport): Uint8Array[] | undefined {
  const model = (value as Partial<LazyEndpointReport>)[MODEL_CONNECTIONS];
  if (model === undefined) return undefined;
  const head = EndpointReport.encode({ hostId: value.hostId, connections: [], status: undefined, droppedClosed: 0, firstReport: false }).finish();
  const tail = EndpointReport.encode({
    hostId: "",
    connections: [],
    status: value.status,
    droppedClosed: value.droppedClosed,
    firstReport: value.firstReport,
  }).finish();
  return [head, ...connectionEntries(model), tail];
}

/** The generated service definition with the fast serializer on Report; everything else as generated. */
export const FastEndpointReporterService = {
  ...EndpointReporterService,
  report: { ...EndpointReporterService.report, responseSerialize: serializeIntoScratch },
} as const satisfies typeof EndpointReporterService;
