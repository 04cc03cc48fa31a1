/**
 * The EndpointReporter client for TypeScript consumers (the CLI among them): the generated client
 * with Report answers decoded by ReportDecoder. Same constructor, same methods, same messages.
 */
import { makeGenericClientConstructor } from "@grpc/grpc-js";
import { EndpointReporterClient as GeneratedClient, EndpointReporterService } from "../generated/endpoint_reporter.ts";
import { ReportDecoder } from "./report-decoder.ts";

// One decoder for every client: decoding is synchronous, and its string cache is worth sharing.
const decoder = new ReportDecoder();

export const FastEndpointReporterClientService = {
  ...EndpointReporterService,
  report: { ...EndpointReporterService.report, responseDeserialize: (bytes: Buffer) => decoder.decode(bytes) },
} as const satisfies typeof EndpointReporterService;

export const EndpointReporterClient = makeGenericClientConstructor(
  FastEndpointReporterClientService,
  "scope.endpoint.v1.EndpointReporter",
) as unknown as typeof GeneratedClient;
export type EndpointReporterClient = InstanceType<typeof GeneratedClient>;
