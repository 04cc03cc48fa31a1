/**
 * Every error the plugin raises on purpose, with a stable code that logs, status reasons and tests
 * can rely on. One table: add a row here rather than throwing a bare Error with a new message shape.
 */

export const ErrorCodes = {
  ERR_CONFIG: "invalid configuration",
  ERR_BAD_REQUEST: "malformed request",
  ERR_CLIENT_TOO_SLOW: "client could not keep up",
  ERR_KERNEL_UNSUPPORTED: "kernel refused for eBPF",
  ERR_BPF_ADDON: "native addon missing or unloadable",
  ERR_BPF_PERMISSION: "no privilege to load BPF programs",
  ERR_BPF_NO_BTF: "kernel has no BTF",
  ERR_SNAPSHOT_PID_NAMESPACE: "the BPF socket iterator would not see every process",
  ERR_BPF_ITER_UNSUPPORTED: "kernel has no usable BPF socket iterator",
  ERR_BPF_OBJECT: "BPF object missing or unreadable",
  ERR_BPF_LOAD: "BPF program rejected by the kernel",
  ERR_BPF_ATTACH: "BPF program could not attach",
  ERR_TRACKER_DEAD: "eBPF tracker died",
  ERR_STOPPED: "stopping",
  ERR_TRACKER_MISMATCH: "native addon and BPF object built from different headers",
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class PluginError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PluginError";
    this.code = code;
  }
}

/** The code of any error, ours or the native addon's (which sets `code` on plain Errors). */
export function errorCode(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : "ERR_UNKNOWN";
}

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${errorCode(error)}: ${error.message}`;
  return String(error);
}
