/**
 * Field readers over `struct tracker_socket` records (bpf/tracker.h). Every field the snapshot
 * record shares with the event record sits at the event's offset, so ../ebpf/record.ts reads them;
 * only the snapshot's own fields are here.
 */
export { addressText, commText, Field, sockCookie } from "../ebpf/record.ts";

export const SOCKET_RECORD_SIZE = 80;
export const SOCKET_RECORD_TYPE = 4;

export const SocketField = {
  inode: 0,
  fd: 4,
  state: 54,
} as const;
