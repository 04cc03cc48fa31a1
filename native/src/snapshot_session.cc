// SPDX-License-Identifier: Apache-2.0
#include "snapshot_session.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <functional>

#include "heap_trim.h"
#include "libbpf_log.h"
#include "signals_blocked.h"
#include "../../bpf/tracker.h"

namespace scope_tracker {
namespace {

static_assert(sizeof(tracker_socket) == 80, "struct tracker_socket is 80 bytes (plugin/ebpf/snapshot.ts)");
static_assert(offsetof(tracker_socket, pid) == offsetof(tracker_event, pid), "shared fields share offsets");
static_assert(offsetof(tracker_socket, sock_cookie) == offsetof(tracker_event, sock_cookie), "shared fields share offsets");

constexpr const char* kProgram = "snapshot_tcp_sockets";
// The kernel function whose BTF an iter/task_file program (5.8+) attaches to.
constexpr const char* kTaskFileTarget = "bpf_iter_task_file";
// bpf_seq_read hands out at most its seq buffer (8 pages) per read(); a bigger buffer costs nothing.
constexpr size_t kReadChunk = 64 * 1024;

// Asked of the kernel's BTF before loading, so that an old kernel reads as such and not as
// whatever libbpf's attach-target lookup happens to fail with.
void RequireTaskFileIterator() {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (!vmlinux) {
    int err = errno;
    throw BpfError(kErrIterUnsupported, "kernel BTF unreadable (" + ErrnoText(err) + "): iterators need it");
  }
  int id = btf__find_by_name_kind(vmlinux, kTaskFileTarget, BTF_KIND_FUNC);
  btf__free(vmlinux);
  if (id < 0) {
    throw BpfError(kErrIterUnsupported, std::string("kernel has no iter/task_file (") + kTaskFileTarget +
                                            " is not in its BTF; BPF task_file iterators need Linux 5.8+)");
  }
}

// Hands the iterator's output to on_records one read at a time, whole records only (a record a
// read splits is joined to the next); stops early when on_records returns false. Throws BpfError.
void ReadIterator(bpf_link* link, const std::function<bool(const uint8_t*, size_t)>& on_records) {
  int fd = bpf_iter_create(bpf_link__fd(link));
  if (fd < 0) {
    int err = errno;
    throw BpfError(kErrIterRead, "bpf_iter_create: " + ErrnoText(err));
  }
  constexpr size_t kSize = sizeof(tracker_socket);
  std::vector<uint8_t> chunk(kReadChunk + kSize);
  size_t carried = 0;
  uint64_t total = 0;
  for (;;) {
    ssize_t n = read(fd, chunk.data() + carried, kReadChunk);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      close(fd);
      throw BpfError(kErrIterRead, "read iterator: " + ErrnoText(err));
    }
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    const size_t have = carried + static_cast<size_t>(n);
    const size_t whole = have - have % kSize;
    if (whole > 0 && !on_records(chunk.data(), whole)) {
      close(fd);
      return;
    }
    carried = have - whole;
    if (carried > 0) std::memmove(chunk.data(), chunk.data() + whole, carried);
  }
  close(fd);
  if (carried != 0) {
    throw BpfError(kErrIterRead, "iterator output of " + std::to_string(total) + " bytes is not whole " +
                                     std::to_string(kSize) + "-byte records");
  }
}

}  // namespace

std::unique_ptr<SnapshotSession> SnapshotSession::Open(const std::string& object_path, bool probe_reads) {
  InstallLibbpfLog();
  ClearLibbpfLog();
  RequireTaskFileIterator();

  std::unique_ptr<SnapshotSession> session(new SnapshotSession());
  if (access(object_path.c_str(), R_OK) != 0) {
    int err = errno;
    throw BpfError(kErrObject, "cannot open BPF object " + object_path + ": " + ErrnoText(err) +
                                   (err == ENOENT ? " (run scripts/build-bpf.sh)" : ""));
  }
  session->obj_ = bpf_object__open_file(object_path.c_str(), nullptr);
  if (!session->obj_) {
    int err = errno;
    throw BpfError(kErrObject, WithLog("cannot open BPF object " + object_path + ": " + ErrnoText(err)));
  }
  bpf_program* prog = bpf_object__find_program_by_name(session->obj_, kProgram);
  if (!prog) throw BpfError(kErrObject, object_path + " has no program " + kProgram);
  SetRodataBool(session->obj_, "force_probed", probe_reads, object_path);

  int err;
  {
    SignalsBlocked quiet;  // see signals_blocked.h: a pending signal fails the verifier with EAGAIN
    err = -bpf_object__load(session->obj_);
  }
  ReturnFreedHeap();
  if (err) {
    bool verifier = LibbpfLog().find("BEGIN PROG LOAD LOG") != std::string::npos;
    if (err == EPERM || (err == EACCES && !verifier)) {
      throw BpfError(kErrPermission, WithLog("load BPF object " + object_path + ": bpf() refused: " + ErrnoText(err) +
                                             " (needs root, or CAP_BPF and CAP_PERFMON)"));
    }
    throw BpfError(kErrLoad, WithLog("load BPF object " + object_path + ": " + ErrnoText(err)));
  }
  session->link_ = bpf_program__attach_iter(prog, nullptr);
  if (!session->link_) {
    int aerr = errno ? errno : EINVAL;
    throw BpfError(aerr == EPERM || aerr == EACCES ? kErrPermission : kErrAttach,
                   WithLog(std::string("attach iter/task_file: ") + ErrnoText(aerr)));
  }
  return session;
}

SnapshotSession::~SnapshotSession() {
  if (link_) bpf_link__destroy(link_);
  if (obj_) bpf_object__close(obj_);
}

void SnapshotSession::Read(const std::function<bool(const uint8_t*, size_t)>& on_records) const {
  size_t records = 0;
  ReadIterator(link_, [&](const uint8_t* data, size_t bytes) {
    records += bytes / sizeof(tracker_socket);
    return on_records(data, bytes);
  });
  last_records_.store(records, std::memory_order_relaxed);
}

namespace {
constexpr size_t kSocketRecord = sizeof(tracker_socket);

uint64_t CookieOf(const uint8_t* record) {
  uint64_t v;
  std::memcpy(&v, record + offsetof(tracker_socket, sock_cookie), sizeof v);
  return v;
}

uint32_t PidOf(const uint8_t* record) {
  uint32_t v;
  std::memcpy(&v, record + offsetof(tracker_socket, pid), sizeof v);
  return v;
}
}  // namespace

SocketFold::SocketFold(size_t expected_records) {
  size_t slots = 1024;
  while (slots < 2 * expected_records) slots <<= 1;
  seen_.assign(slots, 0);
}

bool SocketFold::Insert(uint64_t cookie) {
  // A socket's address is never 0, which marks an empty slot.
  size_t mask = seen_.size() - 1;
  size_t h = static_cast<size_t>((cookie >> 4) * 0x9e3779b97f4a7c15ULL) & mask;
  while (seen_[h] != 0) {
    if (seen_[h] == cookie) return false;
    h = (h + 1) & mask;
  }
  seen_[h] = cookie;
  if (++used_ * 2 > seen_.size()) Grow();
  return true;
}

void SocketFold::Grow() {
  std::vector<uint64_t> old(seen_.size() * 2, 0);
  old.swap(seen_);
  used_ = 0;
  for (uint64_t cookie : old) {
    if (cookie != 0) Insert(cookie);
  }
}

bool SocketFold::Take(const uint8_t* record) {
  const uint64_t cookie = CookieOf(record);
  if (cookie == 0) return true;  // not a socket the kernel could name twice
  if (PidOf(record) == 0) {
    queued_.insert(queued_.end(), record, record + kSocketRecord);
    return false;
  }
  return Insert(cookie);
}

std::vector<uint8_t> SocketFold::TakeQueued() {
  std::vector<uint8_t> out;
  for (size_t o = 0; o < queued_.size(); o += kSocketRecord) {
    if (Insert(CookieOf(queued_.data() + o))) out.insert(out.end(), queued_.begin() + o, queued_.begin() + o + kSocketRecord);
  }
  queued_.clear();
  return out;
}

}  // namespace scope_tracker
