/**
 * Server reflection (so `grpcurl -plaintext -unix <sock> list` works) from the descriptors that
 * scripts/codegen.sh embeds: @grpc/reflection wants a proto-loader package definition, and only
 * reads each entry's fileDescriptorProtos, so a minimal one is built from the embedded bytes.
 */
import type { Server } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { fileDescriptors } from "../../generated/descriptors.ts";

export const REFLECTED_SERVICES = [
  "scope.endpoint.v1.EndpointReporter",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

export function addReflection(server: Server): void {
  const protos = fileDescriptors.map((f) => Buffer.from(f.base64, "base64"));
  const definition = Object.fromEntries(REFLECTED_SERVICES.map((name) => [name, { fileDescriptorProtos: protos }]));
  // The constructor's declared type is proto-loader's; it reads nothing but fileDescriptorProtos.
  const reflection = new ReflectionService(definition as unknown as ConstructorParameters<typeof ReflectionService>[0], {
    services: [...REFLECTED_SERVICES],
  });
  reflection.addToServer(server);
}
