// SPDX-License-Identifier: Apache-2.0
// Captures libbpf's log (process-wide libbpf_set_print) into a bounded buffer so
// load errors can quote the verifier's last lines; nothing is printed to stderr.
#pragma once

#include <string>

namespace scope_tracker {

// Install the capture as libbpf's print function (idempotent).
void InstallLibbpfLog();

// Forget what was captured so far (call before an operation whose log you want).
void ClearLibbpfLog();

// Whole capture (at most ~16 KiB, oldest text dropped first).
std::string LibbpfLog();

// The last max_lines non-empty lines, at most max_bytes, for error messages.
std::string LibbpfLogTail(size_t max_lines = 12, size_t max_bytes = 2048);

// strerror, plus libbpf's own codes (LIBBPF_ERRNO__*, 4000 and up).
std::string ErrnoText(int err);

// message, then the log's tail (the verifier's last lines), for load errors.
std::string WithLog(std::string message);

}  // namespace scope_tracker
