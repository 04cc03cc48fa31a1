// SPDX-License-Identifier: Apache-2.0
// The socket snapshot iterator (build/snapshot.bpf.o) with libbpf: load and attach once, then
// each Read() creates an iterator fd and reads it to EOF. No Node-API here: errors are BpfError.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
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

  // One pass over the host's tasks (with the accept queues of the listeners they hold): each
  // read()'s whole records go to on_records as they come, while the kernel walks on; false
  // from on_records ends the pass. Safe to call from any thread, and from several at once (each
  // call has its own iterator fd). Throws BpfError.
  void Read(const std::function<bool(const uint8_t* records, size_t bytes)>& on_records) const;
  // Records the previous pass gave (to size the next one's fold).
  size_t last_records() const { return last_records_.load(std::memory_order_relaxed); }

 private:
  SnapshotSession() = default;
  bpf_object* obj_ = nullptr;
  bpf_link* link_ = nullptr;  // iter/task_file: every socket a process holds or a listener queues
  mutable std::atomic<size_t> last_records_{0};
};

// One record per socket, decided as the records stream in: the walk visits tasks in pid order, so
// the first record of a socket is that of the lowest pid holding it (the owner the /proc scan
// gives a shared socket) and later ones are dropped. Records with pid 0 (queued in a listener,
// held by no process yet) are held back to the end of the walk and go out only for sockets no
// process had (one accepted during the walk keeps its owner).
class SocketFold {
 public:
  explicit SocketFold(size_t expected_records);
  // Whether this record goes out now.
  bool Take(const uint8_t* record);
  // After the walk: the held-back records of sockets no owner had, once each.
  std::vector<uint8_t> TakeQueued();

 private:
  bool Insert(uint64_t cookie);  // false when already seen
  void Grow();
  // Socket addresses seen, open addressing, at most half full: 200k sockets in a few
  // milliseconds, where a node-based set costs an allocation per socket.
  std::vector<uint64_t> seen_;
  size_t used_ = 0;
  std::vector<uint8_t> queued_;
};

}  // namespace scope_tracker
