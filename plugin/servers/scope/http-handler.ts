/**
 * The plugin's HTTP/1.1 surface: `GET /report?api_version=1&probe_id=X` and nothing else.
 * Every other path is 404, other methods on /report 405, malformed requests 400; no request can
 * make the handler throw past this function.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "../../log.ts";
import { PluginError } from "../../errors.ts";
import { API_VERSION } from "./report-json.ts";

export const MAX_PROBE_ID_LENGTH = 128;
/** Requests to the plugin carry no body; anything past this is cut off. */
export const MAX_BODY_BYTES = 64 * 1024;
const PROBE_ID = /^[A-Za-z0-9._:-]+$/;

export interface ReportSource {
  /** The body to answer with; serving it delivers nothing by itself. */
  bodyFor(probeId: string | undefined): Buffer;
  /** Before bodyFor: waits while the body on hand is not current; a stand-in body if none got ready in time. */
  awaitCurrent?(probeId: string | undefined): Promise<Buffer | undefined> | undefined;
  /** The whole of `body` went out to this probe. */
  bodySent?(probeId: string, body: Buffer): void;
  /** `body` did not go out whole. */
  bodyAbandoned?(probeId: string | undefined, body: Buffer): void;
  /** Told when a body starts going out; the returned function is called once it is out or abandoned. */
  responseWriting?(): () => void;
}

export function createScopeRequestHandler(source: ReportSource, log?: Logger) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const fail = (error: unknown) => {
      log?.error("scope plugin request failed", { error });
      if (!res.headersSent) sendText(res, 500, "internal error\n");
      else res.destroy();
    };
    try {
      discardBody(req, res);
      route(source, req, res).catch(fail);
    } catch (error) {
      fail(error);
    }
  };
}

async function route(source: ReportSource, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let url: URL;
  try {
    url = new URL(req.url ?? "", "http://plugin");
  } catch {
    sendText(res, 400, "malformed request target\n");
    return;
  }
  if (url.pathname !== "/report") {
    sendText(res, 404, `no such path ${JSON.stringify(url.pathname.slice(0, 100))}; this plugin serves GET /report\n`);
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    sendText(res, 405, `method ${req.method} not allowed on /report\n`);
    return;
  }
  let probeId: string | undefined;
  try {
    probeId = parseReportQuery(url.searchParams);
  } catch (error) {
    sendText(res, 400, `${(error as Error).message}\n`);
    return;
  }
  const waiting = source.awaitCurrent?.(probeId);
  const standIn = waiting === undefined ? undefined : await waiting;
  // The client gave up while a current body was being built.
  if (res.destroyed) return;
  const body = standIn ?? source.bodyFor(probeId);
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
  // A HEAD answer carries nothing, so it delivers nothing.
  if (req.method === "HEAD") return void res.end();
  const written = source.responseWriting?.();
  const socket = req.socket;
  let settled = false;
  const settle = (whole: boolean) => {
    if (settled) return;
    settled = true;
    written?.();
    if (!whole) source.bodyAbandoned?.(probeId, body);
    else if (probeId !== undefined) source.bodySent?.(probeId, body);
  };
  // Sent whole: the body's write completed on a socket still alive and without an error, so every
  // byte is with the kernel. Node calls that callback, and emits "finish", even when the probe
  // reset the connection half-way (its 500 ms deadline), so the socket's state decides. The end
  // of the response goes separately, after: a client that closes once it has every byte makes
  // that last empty write fail (EPIPE), which says nothing about the body.
  res.write(body, () => {
    const whole = !socket.destroyed && socket.errored == null;
    res.end();
    settle(whole);
  });
  res.once("close", () => settle(false));
}

/** The probe_id, or undefined when absent; throws ERR_BAD_REQUEST for values Scope never sends. */
export function parseReportQuery(params: URLSearchParams): string | undefined {
  const versions = params.getAll("api_version");
  if (versions.length > 1 || (versions.length === 1 && versions[0] !== API_VERSION)) {
    throw new PluginError("ERR_BAD_REQUEST", `unsupported api_version ${JSON.stringify(versions.join(",")).slice(0, 60)}; this plugin speaks ${API_VERSION}`);
  }
  const ids = params.getAll("probe_id");
  if (ids.length > 1) throw new PluginError("ERR_BAD_REQUEST", "more than one probe_id");
  if (ids.length === 0 || ids[0] === "") return undefined;
  const id = ids[0];
  if (id.length > MAX_PROBE_ID_LENGTH || !PROBE_ID.test(id)) {
    throw new PluginError("ERR_BAD_REQUEST", `malformed probe_id (at most ${MAX_PROBE_ID_LENGTH} of A-Z a-z 0-9 . _ : -)`);
  }
  return id;
}

/** Drains any body so keep-alive keeps working, and drops the connection when it is too large. */
function discardBody(req: IncomingMessage, res: ServerResponse): void {
  let received = 0;
  req.on("data", (chunk: Buffer) => {
    received += chunk.length;
    if (received > MAX_BODY_BYTES) {
      res.shouldKeepAlive = false;
      req.socket.destroy();
    }
  });
  req.on("error", () => {});
  req.resume();
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}
