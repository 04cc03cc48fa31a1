// SPDX-License-Identifier: Apache-2.0
// The socket snapshot iterator (build/snapshot.bpf.o) with libbpf: load and attach once, then
// each Read() creates an iterator fd and reads it to EOF. No Node-API here: errors are BpfError.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bpf_session.h"  // BpfError and its codes

struct bpf_object;
struct bpf_link;

namespace scope_tracker {

// The kernel has no iter/task_file (before 5.8): the caller scans /proc instead.
inline constexpr const char* kErrIterUnsupported = "ERR_BPF_ITER_UNSUPPORTED";
// Creating or reading an iterator failed on a kernel that has them.
inline constexpr const char* kErrIterRead = "ERR_BPF_ITER_READ";

class SnapshotSession {
 public:
  // Opens, loads and attaches the iterator program; throws BpfError. probe_reads: take the
  // program's 5.8-5.10 path (helper reads) even where the direct one would load.
  static std::unique_ptr<SnapshotSession> Open(const std::string& object_path, bool probe_reads = false);
  ~SnapshotSession();
  SnapshotSession(const SnapshotSession&) = delete;
  SnapshotSession& operator=(const SnapshotSession&) = delete;

  // Every record of one pass over the host's tasks, then of our network namespace's TCP tables
  // (iter/tcp, where the kernel has it), appended to *out. Safe to call from any
  // thread, and from several at once (each call has its own iterator fd). Throws BpfError.
  void Read(std::vector<uint8_t>* out) const;

 private:
  SnapshotSession() = default;
  bpf_object* obj_ = nullptr;
  bpf_link* link_ = nullptr;                // iter/task_file: every socket a process holds
  bpf_link* own_namespace_link_ = nullptr;  // iter/tcp, when the kernel has it: our namespace's unheld sockets
  mutable std::atomic<size_t> last_bytes_{0};  // size of the previous read, to allocate once
};

// One record per socket: of the records naming the same socket (same kernel address), the one
// with the lowest pid stays, as the /proc scan gives a shared socket to the lowest pid holding
// it, and a record with pid 0 (held by no process) only when there is no other; kernel order is
// kept otherwise. Returns the number of records left in *records.
size_t FoldSharedSockets(std::vector<uint8_t>* records);

}  // namespace scope_tracker
