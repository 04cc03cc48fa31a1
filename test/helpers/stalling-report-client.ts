/**
 * A real grpc-js Report caller in a process of its own, so that a test can stall it mid-answer:
 * once the answer's headers arrive its event loop is blocked for `stallMs`, so nothing more is
 * read and the server's write waits on HTTP/2 flow control. Then, with mode "cancel", it cancels
 * the call. Prints one JSON line: the status code and how many closed connections it received.
 *
 * Usage: stalling-report-client.ts <address> <client_id> <cancel|deadline> <deadlineMs> <stallMs>
 */
import { credentials, Metadata } from "@grpc/grpc-js";
import { EndpointReporterClient } from "../../plugin/generated/endpoint_reporter.ts";

const [address, clientId, mode, deadlineMs, stallMs] = process.argv.slice(2);
const client = new EndpointReporterClient(address, credentials.createInsecure());
const call = client.report({ clientId }, new Metadata(), { deadline: Date.now() + Number(deadlineMs) }, (error, value) => {
  process.stdout.write(`${JSON.stringify({ code: error?.code ?? 0, closed: value?.connections.filter((c) => c.closed).length ?? 0 })}\n`);
  client.close();
});
call.on("metadata", () => {
  const until = Date.now() + Number(stallMs);
  while (Date.now() < until) {
    // Blocked on purpose: the socket is not read.
  }
  if (mode === "cancel") call.cancel();
});
