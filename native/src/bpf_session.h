// SPDX-License-Identifier: Apache-2.0
// Loading, attaching and reading the kernel side (build/tracker.bpf.o) with libbpf.
// No Node-API here: errors are BpfError{code, message}, turned into JS errors by tracker.cc.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <linux/types.h>

#include "../../bpf/tracker.h"

struct bpf_object;
struct bpf_link;

namespace scope_tracker {

// Error codes surfaced as err.code in JS.
inline constexpr const char* kErrPermission = "ERR_BPF_PERMISSION";
inline constexpr const char* kErrNoBtf = "ERR_BPF_NO_BTF";
inline constexpr const char* kErrObject = "ERR_BPF_OBJECT";
inline constexpr const char* kErrLoad = "ERR_BPF_LOAD";
inline constexpr const char* kErrAttach = "ERR_BPF_ATTACH";

// Sets a one-byte `const volatile` global in .rodata by name (there is no skeleton: the object
// is loaded from a path at run time, so the variable is found through BTF). Throws BpfError.
void SetRodataBool(bpf_object* obj, const char* name, bool value, const std::string& path);

class BpfError : public std::runtime_error {
 public:
  BpfError(const char* code, const std::string& message) : std::runtime_error(message), code_(code) {}
  const char* code() const { return code_; }

 private:
  const char* code_;
};

struct BpfOptions {
  std::string object_path;
  uint32_t ring_buffer_bytes = 0;  // 0: keep the object's default (4 MiB)
  bool tracepoints_only = false;   // never try tp_btf (the classic tracepoints everywhere)
};

// What serves one hook on this kernel (native/src/attach_plan.c decides).
struct Attachment {
  std::string hook;     // "inet_sock_set_state", "sys_exit_accept", "sys_exit_accept4"
  std::string type;     // "tp_btf" | "tracepoint"; "" when the hook is not attached
  std::string section;  // the program's ELF section; "" when not attached
  std::string reason;   // why this type (and why not the preferred one)
};

// Summed over CPUs; indexes are enum tracker_counter, then kCounterMissed.
// kCounterMissed: runs of our programs the kernel skipped because another BPF program was already
// running on that CPU (recursion protection, e.g. a softirq landing inside a process-context run).
// Those events are lost as surely as a full ring's, and the kernel counts them per program.
constexpr size_t kCounterMissed = TRACKER_COUNTER_MAX;
using Counters = std::array<uint64_t, TRACKER_COUNTER_MAX + 1>;

class BpfSession {
 public:
  // Opens, loads and attaches; throws BpfError. Mounts tracefs if needed.
  static std::unique_ptr<BpfSession> Open(const BpfOptions& options);
  ~BpfSession();
  BpfSession(const BpfSession&) = delete;
  BpfSession& operator=(const BpfSession&) = delete;

  int events_fd() const { return events_fd_; }
  // Section names of the attached programs, e.g. "tracepoint/sock/inet_sock_set_state".
  const std::vector<std::string>& attached() const { return attached_names_; }
  // Every hook, attached or not, with its program type and the reason for it.
  const std::vector<Attachment>& attachments() const { return attachments_; }
  // Reads the per-CPU counters map. Returns false if the read failed.
  bool ReadCounters(Counters* out) const;
  // Destroys every link (no new events); maps and programs stay until destruction.
  void Detach();

 private:
  BpfSession() = default;
  // One load-and-attach attempt with the plan's current choices; throws BpfError.
  void LoadAndAttach(const BpfOptions& options);

  bpf_object* obj_ = nullptr;
  std::vector<bpf_link*> links_;
  std::vector<int> attached_prog_fds_;
  std::vector<std::string> attached_prog_names_;
  std::vector<std::string> attached_names_;
  std::vector<Attachment> attachments_;
  // Whether the tp_btf backstop reads the first program's guard (backstop_setup.h), and why not.
  bool backstop_ready_ = false;
  std::string backstop_off_;
  int events_fd_ = -1;
  int counters_fd_ = -1;
  int ncpus_ = 0;
};

}  // namespace scope_tracker
