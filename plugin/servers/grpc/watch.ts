/**
 * One Watch stream: the open connections as a snapshot, a completion marker, then live changes.
 * Memory per stream is bounded: grpc-js buffers a few messages, and past that the changes wait in
 * a queue of at most `maxQueued`; a reader that lets it overflow is ended with RESOURCE_EXHAUSTED
 * instead of making the server hold an ever-growing backlog.
 */
import { type ServerWritableStream, status as GrpcStatus } from "@grpc/grpc-js";
import type { ConnectionChange, ReportBackend } from "../../model/backend.ts";
import type { Connection } from "../../model/connection.ts";
import type { Logger } from "../../log.ts";
import { ConnectionEvent, EventType, type WatchRequest } from "../../generated/endpoint_reporter.ts";
import { connectionToWire } from "./convert.ts";

export interface WatchOptions {
  maxQueued: number;
  log?: Logger;
}

type Call = ServerWritableStream<WatchRequest, ConnectionEvent>;

export class WatchStream {
  readonly #call: Call;
  readonly #maxQueued: number;
  readonly #log?: Logger;
  #snapshot: readonly Connection[];
  #snapshotSent = 0;
  #markerSent = false;
  /** Live changes not yet handed to grpc-js; `#head` avoids O(n) shifts. */
  #queue: ConnectionChange[] = [];
  #head = 0;
  #sequence = 0;
  #blocked = false;
  #finished = false;
  #unsubscribe: () => void;
  readonly #onFinished: (stream: WatchStream) => void;

  constructor(call: Call, backend: ReportBackend, options: WatchOptions, onFinished: (stream: WatchStream) => void) {
    this.#call = call;
    this.#maxQueued = options.maxQueued;
    this.#log = options.log;
    this.#onFinished = onFinished;
    // Snapshot and subscription in the same tick: no change can fall between them or be seen twice.
    this.#snapshot = backend.openConnections();
    this.#unsubscribe = backend.subscribe((change) => this.#onChange(change));
    call.on("drain", () => {
      this.#blocked = false;
      this.#pump();
    });
    call.once("cancelled", () => this.#finish());
    call.once("close", () => this.#finish());
    call.once("finish", () => this.#finish());
    call.on("error", () => this.#finish());
    this.#pump();
  }

  get queued(): number {
    return this.#queue.length - this.#head;
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** Ends the stream from the server side with a status (for shutdown). */
  end(code: GrpcStatus, details: string): void {
    if (this.#finished) return;
    this.#finish();
    this.#call.emit("error", { code, details });
  }

  /** Runs inside the table's publish loop: nothing may escape from here into the tracker. */
  #onChange(change: ConnectionChange): void {
    try {
      this.#enqueue(change);
    } catch (error) {
      this.#log?.error("watch stream failed", { error });
      this.#finish();
    }
  }

  #enqueue(change: ConnectionChange): void {
    if (this.#finished) return;
    this.#queue.push(change);
    if (this.queued > this.#maxQueued) {
      const details =
        `Watch reader too slow: more than ${this.#maxQueued} changes waiting for it (ERR_CLIENT_TOO_SLOW); ` +
        "read faster, or call Watch again to restart from a fresh snapshot";
      this.#log?.warn("watch reader cut off", { code: "ERR_CLIENT_TOO_SLOW", peer: safePeer(this.#call), queued: this.queued });
      this.end(GrpcStatus.RESOURCE_EXHAUSTED, details);
      return;
    }
    if (!this.#blocked) this.#pump();
  }

  #pump(): void {
    while (!this.#finished && !this.#blocked) {
      const event = this.#next();
      if (event === undefined) return;
      if (!this.#call.write(event)) this.#blocked = true;
    }
  }

  #next(): ConnectionEvent | undefined {
    if (!this.#markerSent && this.#snapshotSent < this.#snapshot.length) {
      const connection = this.#snapshot[this.#snapshotSent++];
      return this.#event(EventType.EVENT_TYPE_SNAPSHOT, connectionToWire(connection));
    }
    if (!this.#markerSent) {
      this.#markerSent = true;
      this.#snapshot = [];
      return { ...this.#event(EventType.EVENT_TYPE_SNAPSHOT_COMPLETE, undefined), snapshotCount: this.#snapshotSent };
    }
    if (this.#head === this.#queue.length) return undefined;
    const change = this.#queue[this.#head++];
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    }
    const type = change.type === "open" ? EventType.EVENT_TYPE_OPEN : EventType.EVENT_TYPE_CLOSE;
    return this.#event(type, connectionToWire(change.connection));
  }

  #event(type: EventType, connection: ConnectionEvent["connection"]): ConnectionEvent {
    return { type, connection, sequence: ++this.#sequence, snapshotCount: 0 };
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#unsubscribe();
    this.#queue = [];
    this.#head = 0;
    this.#snapshot = [];
    this.#onFinished(this);
  }
}

function safePeer(call: Call): string {
  try {
    return call.getPeer();
  } catch {
    return "unknown";
  }
}
