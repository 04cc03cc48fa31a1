/**
 * Server reflection, v1 and v1alpha (so `grpcurl -plaintext -unix <sock> list` and `describe`
 * work), from the descriptors and symbol index that scripts/codegen.sh embeds. Implemented here
 * rather than taken from @grpc/reflection, which wants a proto-loader package definition and
 * brings protobufjs into the plugin's start for what is a lookup in a table.
 */
import { type Server, type ServerDuplexStream, status as GrpcStatus } from "@grpc/grpc-js";
import { type EmbeddedFileDescriptor, fileDescriptors } from "../../generated/descriptors.ts";
import * as v1 from "../../generated/grpc/reflection/v1/reflection.ts";
import * as v1alpha from "../../generated/grpc/reflection/v1alpha/reflection.ts";

/** Every service the embedded files declare: the server serves each of them. */
export const REFLECTED_SERVICES: readonly string[] = fileDescriptors.flatMap((file) => file.services);

const byName = new Map(fileDescriptors.map((file) => [file.name, file]));
const bySymbol = new Map(fileDescriptors.flatMap((file) => file.symbols.map((symbol) => [symbol, file] as const)));
const bytesOf = new Map(fileDescriptors.map((file) => [file.name, Buffer.from(file.base64, "base64")]));

/** The file first, then everything it imports, each once: a client needs them all to decode. */
function withDependencies(file: EmbeddedFileDescriptor): Buffer[] {
  const seen = new Set<string>();
  const order: Buffer[] = [];
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const bytes = bytesOf.get(name);
    if (bytes !== undefined) order.push(bytes);
    for (const dependency of byName.get(name)?.dependencies ?? []) visit(dependency);
  };
  visit(file.name);
  return order;
}

/** The request and response shapes of v1 and v1alpha are the same; only their package differs. */
type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;

export function answerReflection(request: Request): Response {
  const answer = (body: Partial<Response>): Response => ({ validHost: request.host, originalRequest: request, ...body });
  const notFound = (what: string): Response => answer({ errorResponse: { errorCode: GrpcStatus.NOT_FOUND, errorMessage: `${what} not found` } });
  if (request.listServices !== undefined) {
    return answer({ listServicesResponse: { service: REFLECTED_SERVICES.map((name) => ({ name })) } });
  }
  if (request.fileByFilename !== undefined) {
    const file = byName.get(request.fileByFilename);
    return file === undefined ? notFound(`file ${JSON.stringify(request.fileByFilename)}`) : answer({ fileDescriptorResponse: { fileDescriptorProto: withDependencies(file) } });
  }
  if (request.fileContainingSymbol !== undefined) {
    const file = bySymbol.get(request.fileContainingSymbol.replace(/^\./, ""));
    return file === undefined ? notFound(`symbol ${JSON.stringify(request.fileContainingSymbol)}`) : answer({ fileDescriptorResponse: { fileDescriptorProto: withDependencies(file) } });
  }
  if (request.allExtensionNumbersOfType !== undefined) {
    // No file here declares extensions: a known message type has none, an unknown one is not found.
    const type = request.allExtensionNumbersOfType.replace(/^\./, "");
    return bySymbol.has(type) ? answer({ allExtensionNumbersResponse: { baseTypeName: type, extensionNumber: [] } }) : notFound(`type ${JSON.stringify(type)}`);
  }
  if (request.fileContainingExtension !== undefined) {
    const { containingType, extensionNumber } = request.fileContainingExtension;
    return notFound(`extension ${extensionNumber} of ${JSON.stringify(containingType)}`);
  }
  return answer({ errorResponse: { errorCode: GrpcStatus.INVALID_ARGUMENT, errorMessage: "the request names nothing to look up" } });
}

function serveStream(call: ServerDuplexStream<Request, Response>): void {
  call.on("data", (request: Request) => call.write(answerReflection(request)));
  call.on("end", () => call.end());
  call.on("error", () => undefined); // a client that hangs up mid-stream: nothing to clean up
}

export function addReflection(server: Server): void {
  server.addService(v1.ServerReflectionService, { serverReflectionInfo: serveStream });
  server.addService(v1alpha.ServerReflectionService, { serverReflectionInfo: serveStream });
}
