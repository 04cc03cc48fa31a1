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

#include "heap_trim.h"
#include "libbpf_log.h"
#include "../../bpf/tracker.h"

namespace scope_tracker {
namespace {

static_assert(sizeof(tracker_socket) == 80, "struct tracker_socket is 80 bytes (plugin/ebpf/snapshot.ts)");
static_assert(offsetof(tracker_socket, pid) == offsetof(tracker_event, pid), "shared fields share offsets");
static_assert(offsetof(tracker_socket, sock_cookie) == offsetof(tracker_event, sock_cookie), "shared fields share offsets");

constexpr const char* kProgram = "snapshot_tcp_sockets";
constexpr const char* kOwnNamespaceProgram = "snapshot_own_namespace_tcp";
// The kernel functions whose BTF an iter/task_file (5.8+) and an iter/tcp (5.9+) program attach to.
constexpr const char* kTaskFileTarget = "bpf_iter_task_file";
constexpr const char* kTcpTarget = "bpf_iter_tcp";
// bpf_seq_read hands out at most its seq buffer (8 pages) per read(); a bigger buffer costs nothing.
constexpr size_t kReadChunk = 64 * 1024;

// Asked of the kernel's BTF before loading, so that an old kernel reads as such and not as
// whatever libbpf's attach-target lookup happens to fail with. Returns whether iter/tcp exists.
bool RequireTaskFileIterator() {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (!vmlinux) {
    int err = errno;
    throw BpfError(kErrIterUnsupported, "kernel BTF unreadable (" + ErrnoText(err) + "): iterators need it");
  }
  int id = btf__find_by_name_kind(vmlinux, kTaskFileTarget, BTF_KIND_FUNC);
  bool tcp = btf__find_by_name_kind(vmlinux, kTcpTarget, BTF_KIND_FUNC) >= 0;
  btf__free(vmlinux);
  if (id < 0) {
    throw BpfError(kErrIterUnsupported, std::string("kernel has no iter/task_file (") + kTaskFileTarget +
                                            " is not in its BTF; BPF task_file iterators need Linux 5.8+)");
  }
  return tcp;
}

// Appends one iterator's whole output to *out; throws BpfError.
void ReadIterator(bpf_link* link, std::vector<uint8_t>* out, size_t reserve) {
  int fd = bpf_iter_create(bpf_link__fd(link));
  if (fd < 0) {
    int err = errno;
    throw BpfError(kErrIterRead, "bpf_iter_create: " + ErrnoText(err));
  }
  const size_t start = out->size();
  out->reserve(start + reserve + kReadChunk);
  for (;;) {
    size_t used = out->size();
    if (out->capacity() - used < kReadChunk) out->reserve(std::max(out->capacity() * 2, used + kReadChunk));
    out->resize(used + kReadChunk);
    ssize_t n = read(fd, out->data() + used, kReadChunk);
    if (n < 0) {
      int err = errno;
      out->resize(used);
      if (err == EINTR) continue;
      close(fd);
      out->resize(start);
      throw BpfError(kErrIterRead, "read iterator: " + ErrnoText(err));
    }
    out->resize(used + static_cast<size_t>(n));
    if (n == 0) break;
  }
  close(fd);
  if ((out->size() - start) % sizeof(tracker_socket) != 0) {
    size_t got = out->size() - start;
    out->resize(start);
    throw BpfError(kErrIterRead, "iterator output of " + std::to_string(got) + " bytes is not whole " +
                                     std::to_string(sizeof(tracker_socket)) + "-byte records");
  }
}

}  // namespace

std::unique_ptr<SnapshotSession> SnapshotSession::Open(const std::string& object_path, bool probe_reads) {
  InstallLibbpfLog();
  ClearLibbpfLog();
  const bool have_tcp_iterator = RequireTaskFileIterator();

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
  bpf_program* own_ns = bpf_object__find_program_by_name(session->obj_, kOwnNamespaceProgram);
  if (!own_ns) throw BpfError(kErrObject, object_path + " has no program " + kOwnNamespaceProgram);
  // Linux 5.8 has task_file but not tcp iterators: the snapshot goes without the unheld sockets.
  if (!have_tcp_iterator) bpf_program__set_autoload(own_ns, false);

  int err = -bpf_object__load(session->obj_);
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
  if (have_tcp_iterator) {
    session->own_namespace_link_ = bpf_program__attach_iter(own_ns, nullptr);
    if (!session->own_namespace_link_) {
      int aerr = errno ? errno : EINVAL;
      throw BpfError(aerr == EPERM || aerr == EACCES ? kErrPermission : kErrAttach,
                     WithLog(std::string("attach iter/tcp: ") + ErrnoText(aerr)));
    }
  }
  return session;
}

SnapshotSession::~SnapshotSession() {
  if (own_namespace_link_) bpf_link__destroy(own_namespace_link_);
  if (link_) bpf_link__destroy(link_);
  if (obj_) bpf_object__close(obj_);
}

void SnapshotSession::Read(std::vector<uint8_t>* out) const {
  // A snapshot is about as big as the previous one: one allocation instead of a doubling series.
  const size_t start = out->size();
  const size_t expected = last_bytes_.load(std::memory_order_relaxed);
  ReadIterator(link_, out, expected + expected / 4);
  // After the task walk: a socket accepted in between is then in both, and the fold keeps its owner.
  if (own_namespace_link_) ReadIterator(own_namespace_link_, out, 0);
  last_bytes_.store(out->size() - start, std::memory_order_relaxed);
}

size_t FoldSharedSockets(std::vector<uint8_t>* records) {
  constexpr size_t kSize = sizeof(tracker_socket);
  constexpr uint32_t kEmpty = UINT32_MAX;
  const size_t n = records->size() / kSize;
  uint8_t* base = records->data();
  auto cookie_of = [base](size_t i) {
    uint64_t v;
    std::memcpy(&v, base + i * kSize + offsetof(tracker_socket, sock_cookie), sizeof v);
    return v;
  };
  // Pid 0 (a socket no process holds, from the namespace's own tables) ranks after every owner.
  auto rank_of = [base](size_t i) {
    uint32_t v;
    std::memcpy(&v, base + i * kSize + offsetof(tracker_socket, pid), sizeof v);
    return v == 0 ? UINT32_MAX : v;
  };
  // Socket address -> index of its record with the lowest pid: open addressing, a quarter full
  // at most (200k sockets in a few milliseconds; a node-based map costs an allocation per socket).
  size_t slots = 16;
  while (slots < 4 * n) slots <<= 1;
  const size_t mask = slots - 1;
  std::vector<uint32_t> best(slots, kEmpty);
  std::vector<bool> keep(n, false);
  for (size_t i = 0; i < n; i++) {
    const uint64_t cookie = cookie_of(i);
    size_t h = static_cast<size_t>((cookie >> 4) * 0x9e3779b97f4a7c15ULL) & mask;
    while (best[h] != kEmpty && cookie_of(best[h]) != cookie) h = (h + 1) & mask;
    if (best[h] == kEmpty) {
      best[h] = static_cast<uint32_t>(i);
      keep[i] = true;
    } else if (rank_of(i) < rank_of(best[h])) {
      keep[best[h]] = false;
      keep[i] = true;
      best[h] = static_cast<uint32_t>(i);
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (!keep[i]) continue;
    if (kept != i) std::memmove(base + kept * kSize, base + i * kSize, kSize);
    kept++;
  }
  records->resize(kept * kSize);
  return kept;
}

}  // namespace scope_tracker
