/**
 * When a Report answer has reached its client, told by grpc-js itself through a server
 * interceptor, so that a client's closes move on only then (and stay for its next call otherwise).
 *
 * grpc-js answers a unary call by writing the message to the HTTP/2 stream and, only from that
 * write's callback (the bytes are in the socket), sending the OK status through the interceptors.
 * Every other end skips that OK: a client cancel or reset (including a client that refuses a
 * message past its receive limit while it is still being sent), a message over the server's send
 * limit, a failed serialization or write, all end the stream and reach `onCancel` with no OK sent.
 * The deadline is the one end grpc-js sends from below the interceptors while the write is still
 * going: an OK that comes at or after the call's deadline is therefore not a delivery.
 * Each answer carries its own settlement (a symbol on the message), so nothing is matched by id.
 */
import { type ServerInterceptingCallInterface, ServerInterceptingCall, type ServerMethodDefinition, status as GrpcStatus } from "@grpc/grpc-js";

const SETTLEMENT: unique symbol = Symbol("report settlement");

export interface Settlement {
  delivered(): void;
  notDelivered(): void;
}

/** Attaches what to do once the fate of `message` is known; the message is returned for chaining. */
export function withSettlement<T extends object>(message: T, settlement: Settlement): T {
  Object.defineProperty(message, SETTLEMENT, { value: settlement, enumerable: false, configurable: true });
  return message;
}

function settlementOf(message: unknown): Settlement | undefined {
  return typeof message === "object" && message !== null ? (message as { [SETTLEMENT]?: Settlement })[SETTLEMENT] : undefined;
}

/** A server interceptor (grpc-js `interceptors` option) settling every answer that carries a settlement. */
export function deliveryInterceptor(_method: ServerMethodDefinition<unknown, unknown>, call: ServerInterceptingCallInterface): ServerInterceptingCall {
  let pending: Settlement | undefined;
  let ended = false;
  const settle = (delivered: boolean) => {
    const settlement = pending;
    pending = undefined;
    if (settlement === undefined) return;
    if (delivered) settlement.delivered();
    else settlement.notDelivered();
  };
  return new ServerInterceptingCall(call, {
    start(next) {
      // Also runs after a normal end (grpc-js reports every end as a cancel), by then settled.
      next({
        onCancel: () => {
          ended = true;
          settle(false);
        },
      });
    },
    sendMessage(message, next) {
      pending = settlementOf(message) ?? pending;
      // An answer built after the call already ended (its deadline passed while it was built).
      if (ended) settle(false);
      next(message);
    },
    sendStatus(status, next) {
      const beforeDeadline = Date.now() < deadlineMs(call);
      next(status);
      settle(status.code === GrpcStatus.OK && beforeDeadline);
    },
  });
}

function deadlineMs(call: ServerInterceptingCallInterface): number {
  const deadline = call.getDeadline();
  return deadline instanceof Date ? deadline.getTime() : deadline;
}
