// SPDX-License-Identifier: Apache-2.0
// The /proc fallback's hot loop in C: one readlinkat() per open fd, no JS string per link.
#pragma once
#include <napi.h>

namespace scope_tracker {

// socketInodes(fdDir: string, from = 0n, maxEntries = 2^31): { inodes: Float64Array, next?: bigint }
// The inodes of the sockets open in one /proc/PID/fd directory, in directory order, reading at most
// maxEntries entries from directory position `from`; `next` is where to go on, absent at the end (so a
// caller can hand its event loop back inside a process with 100k fds). Throws an Error whose `code`
// is the errno name (ENOENT/ESRCH: the process is gone; EACCES: not ours to read).
Napi::Value SocketInodes(const Napi::CallbackInfo& info);

}  // namespace scope_tracker
