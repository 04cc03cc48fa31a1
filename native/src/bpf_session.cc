// SPDX-License-Identifier: Apache-2.0
#include "bpf_session.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/types.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "attach_plan.h"
#include "backstop_setup.h"
#include "heap_trim.h"
#include "libbpf_log.h"
#include "signals_blocked.h"
#include "../../bpf/tracker.h"  // enum tracker_counter

namespace scope_tracker {
namespace {

constexpr const char* kVmlinuxBtf = "/sys/kernel/btf/vmlinux";
constexpr const char* kTracefs = "/sys/kernel/tracing";
constexpr const char* kFirstStateProgram = "handle_set_state_btf";
constexpr const char* kBackstopStateProgram = "handle_set_state_btf_backstop";
constexpr const char* kDebugfsTracing = "/sys/kernel/debug/tracing";

static_assert(TRACKER_COUNTER_MAX == 5, "Counters has one slot per enum tracker_counter, plus kCounterMissed");

// A failed load or attach that another program choice may avoid: `section` names the program that
// failed to attach ("" for a failed load), `short_reason` goes into the hook's reason.
struct AttemptError {
  const char* code;
  std::string section;
  std::string short_reason;
  std::string message;
};

bool DirExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// libbpf resolves tracepoint ids through tracefs, which a fresh machine may not
// have mounted. Returns the events/ directory, mounting tracefs if needed.
std::string EnsureTracefs() {
  const std::string tracefs_events = std::string(kTracefs) + "/events";
  if (DirExists(tracefs_events)) return tracefs_events;
  if (errno == EACCES) {
    throw BpfError(kErrPermission, "cannot read " + tracefs_events + ": " + ErrnoText(EACCES));
  }
  const std::string debugfs_events = std::string(kDebugfsTracing) + "/events";
  if (DirExists(debugfs_events)) return debugfs_events;
  if (!DirExists(kTracefs)) {
    throw BpfError(kErrAttach, std::string("tracefs is not available: ") + kTracefs +
                                   " does not exist (kernel built without tracing support?)");
  }
  if (mount("tracefs", kTracefs, "tracefs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    int err = errno;
    throw BpfError(kErrAttach, std::string("tracefs is not mounted at ") + kTracefs +
                                   " and mounting it failed: " + ErrnoText(err) +
                                   " (mount it first: mount -t tracefs tracefs " + kTracefs + ")");
  }
  if (!DirExists(tracefs_events)) {
    throw BpfError(kErrAttach, std::string("tracefs mounted at ") + kTracefs + " but has no events/ directory");
  }
  return tracefs_events;
}

// Can this process load BPF programs at all? Load a two-instruction tracepoint
// program so a permission problem is reported as such, before tracefs or the
// verifier get a chance to fail with a less direct error.
void CheckBpfPermission() {
  const bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},  // r0 = 0
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},                   // exit
  };
  int fd = bpf_prog_load(BPF_PROG_TYPE_TRACEPOINT, "scope_probe", "GPL", insns, 2, nullptr);
  if (fd >= 0) {
    close(fd);
    return;
  }
  int err = errno;
  if (err == EPERM || err == EACCES) {
    throw BpfError(kErrPermission, "bpf() refused to load a tracepoint program: " + ErrnoText(err) +
                                       " (needs root, or CAP_BPF and CAP_PERFMON; see also "
                                       "kernel.unprivileged_bpf_disabled and kernel lockdown)");
  }
  if (err == ENOSYS) throw BpfError(kErrPermission, "bpf() is not available: " + ErrnoText(err));
  // Anything else is left to the real load, which reports it with libbpf's log.
}

}  // namespace

void SetRodataBool(bpf_object* obj, const char* name, bool value, const std::string& path) {
  bpf_map* map = bpf_object__find_map_by_name(obj, ".rodata");
  const btf* btf = bpf_object__btf(obj);
  size_t size = 0;
  const void* init = map ? bpf_map__initial_value(map, &size) : nullptr;
  int sec_id = btf ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -1;
  if (init && sec_id > 0) {
    const btf_type* sec = btf__type_by_id(btf, sec_id);
    const btf_var_secinfo* vs = btf_var_secinfos(sec);
    for (int i = 0; i < btf_vlen(sec); i++, vs++) {
      const btf_type* var = btf__type_by_id(btf, vs->type);
      if (std::strcmp(btf__name_by_offset(btf, var->name_off), name) != 0) continue;
      if (vs->offset + 1 > size) break;
      std::vector<char> data(static_cast<const char*>(init), static_cast<const char*>(init) + size);
      data[vs->offset] = value ? 1 : 0;
      int err = bpf_map__set_initial_value(map, data.data(), data.size());
      if (err) throw BpfError(kErrObject, WithLog(path + ": cannot set " + name + ": " + ErrnoText(-err)));
      return;
    }
  }
  throw BpfError(kErrObject, path + ": no `const volatile bool " + name + "` in .rodata (object built from another source?)");
}

std::unique_ptr<BpfSession> BpfSession::Open(const BpfOptions& options) {
  InstallLibbpfLog();
  ClearLibbpfLog();
  const std::string& path = options.object_path;

  if (access(kVmlinuxBtf, R_OK) != 0) {
    int err = errno;
    if (err == EACCES || err == EPERM) {
      throw BpfError(kErrPermission, std::string("cannot read kernel BTF ") + kVmlinuxBtf + ": " + ErrnoText(err));
    }
    throw BpfError(kErrNoBtf, std::string("kernel BTF ") + kVmlinuxBtf + " is missing (" + ErrnoText(err) +
                                  "): the kernel needs CONFIG_DEBUG_INFO_BTF=y for the CO-RE object to load");
  }

  {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      throw BpfError(kErrObject, "cannot open BPF object " + path + ": " + ErrnoText(err) +
                                     (err == ENOENT ? " (run scripts/build-bpf.sh)" : ""));
    }
    struct stat st;
    bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!regular) throw BpfError(kErrObject, "BPF object " + path + " is not a regular file");
  }

  CheckBpfPermission();
  const std::string events_dir = EnsureTracefs();

  // Which program serves each hook: tp_btf where the kernel takes it, else the classic tracepoint.
  // libbpf cannot load an object twice, so a refused program means a fresh object without it.
  attach_plan plan;
  attach_plan_init(&plan, events_dir.c_str(), options.tracepoints_only);
  std::unique_ptr<BpfSession> session;
  for (;;) {
    session.reset(new BpfSession());
    char plan_error[512] = "";
    session->obj_ = bpf_object__open_file(path.c_str(), nullptr);
    if (!session->obj_) {
      int err = errno;
      throw BpfError(kErrObject, WithLog("cannot open BPF object " + path + ": " + ErrnoText(err)));
    }
    if (attach_plan_apply(&plan, session->obj_, plan_error, sizeof(plan_error)) != 0) {
      throw BpfError(std::strncmp(plan_error, "attach ", 7) == 0 ? kErrAttach : kErrObject, path + ": " + plan_error);
    }
    try {
      session->LoadAndAttach(options);
      break;
    } catch (const AttemptError& failure) {
      // A refusal of a preferred type, permission included (some hosts refuse tracing programs),
      // falls back; only a failure with nothing left to fall back to is final.
      if (!attach_plan_fall_back(&plan, events_dir.c_str(), failure.section.empty() ? nullptr : failure.section.c_str(),
                                 failure.short_reason.c_str())) {
        throw BpfError(failure.code, failure.message);
      }
      ClearLibbpfLog();
    }
  }
  for (int i = 0; i < plan.n_hooks; i++) {
    const attach_choice& c = plan.hooks[i];
    std::string reason = c.reason;
    if (c.section && std::strcmp(c.section, "tp_btf/inet_sock_set_state") == 0) {
      reason += session->backstop_ready_
                    ? "; a backstop reads the first program's per-CPU guard and does every change it was skipped for"
                    : "; backstop off (its skips are counted as missed): " +
                          (plan.backstop_off[0] ? std::string(plan.backstop_off) : session->backstop_off_);
    }
    session->attachments_.push_back({c.hook, c.type ? c.type : "", c.section ? c.section : "", reason});
  }
  return session;
}

void BpfSession::LoadAndAttach(const BpfOptions& options) {
  const std::string& path = options.object_path;
  bpf_object* obj = obj_;
  bpf_map* events = bpf_object__find_map_by_name(obj, "events");
  bpf_map* counters = bpf_object__find_map_by_name(obj, "counters");
  if (!events || !counters) throw BpfError(kErrObject, path + " lacks the \"events\" or \"counters\" map");
  if (options.ring_buffer_bytes) {
    int err = bpf_map__set_max_entries(events, options.ring_buffer_bytes);
    if (err) {
      throw BpfError(kErrLoad, WithLog("ring buffer size " + std::to_string(options.ring_buffer_bytes) + ": " +
                                       ErrnoText(-err)));
    }
  }

  int err;
  {
    SignalsBlocked quiet;  // see signals_blocked.h: a pending signal fails the verifier with EAGAIN
    err = -bpf_object__load(obj);
  }
  ReturnFreedHeap();
  if (err) {
    // The verifier also answers EACCES; only a refusal without a verifier log is a
    // permission problem.
    bool verifier = LibbpfLog().find("BEGIN PROG LOAD LOG") != std::string::npos;
    if (err == EPERM || (err == EACCES && !verifier)) {
      throw AttemptError{kErrPermission, "", "", WithLog("load BPF object " + path + ": bpf() refused: " + ErrnoText(err) +
                                                         " (needs root, or CAP_BPF and CAP_PERFMON)")};
    }
    throw AttemptError{kErrLoad, "", "load: " + ErrnoText(err), WithLog("load BPF object " + path + ": " + ErrnoText(err))};
  }

  // Before anything is attached: the backstop reads the first program's guard from its first run.
  char why[ATTACH_PLAN_REASON_LEN] = "";
  backstop_ready_ = backstop_setup(obj, why, sizeof(why));
  backstop_off_ = why;

  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    if (!bpf_program__autoload(prog)) continue;
    const char* section = bpf_program__section_name(prog);
    if (backstop_is_setup_section(section)) continue;  // run by backstop_setup above
    bpf_link* link = bpf_program__attach(prog);
    if (!link) {
      int aerr = errno ? errno : EINVAL;
      std::string message = WithLog(std::string("attach ") + section + ": " + ErrnoText(aerr));
      throw AttemptError{aerr == EPERM || aerr == EACCES ? kErrPermission : kErrAttach, section,
                         "attach: " + ErrnoText(aerr), message};
    }
    links_.push_back(link);
    attached_names_.push_back(section);
    attached_prog_fds_.push_back(bpf_program__fd(prog));
    attached_prog_names_.push_back(bpf_program__name(prog));
  }

  events_fd_ = bpf_map__fd(events);
  counters_fd_ = bpf_map__fd(counters);
  ncpus_ = libbpf_num_possible_cpus();
  if (ncpus_ <= 0) throw BpfError(kErrLoad, "cannot count possible CPUs: " + ErrnoText(-ncpus_));
}

BpfSession::~BpfSession() {
  Detach();
  if (obj_) bpf_object__close(obj_);
}

void BpfSession::Detach() {
  for (bpf_link* link : links_) bpf_link__destroy(link);
  links_.clear();
}

bool BpfSession::ReadCounters(Counters* out) const {
  out->fill(0);
  if (counters_fd_ < 0) return false;
  std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpus_));
  for (__u32 key = 0; key < TRACKER_COUNTER_MAX; key++) {
    if (bpf_map_lookup_elem(counters_fd_, &key, per_cpu.data()) != 0) return false;
    for (uint64_t v : per_cpu) (*out)[key] += v;
  }
  // A state change the first tp_btf program was skipped for is handled by the backstop (counted in
  // TRACKER_COUNTER_BACKSTOP) unless the backstop was skipped for it too: only the difference is
  // missed. A skipped backstop run alone loses nothing (the first program had handled that change).
  // Every other program's skips are missed events.
  uint64_t first_missed = 0;
  for (size_t i = 0; i < attached_prog_fds_.size(); i++) {
    bpf_prog_info info = {};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(attached_prog_fds_[i], &info, &len) != 0) return false;
    if (attached_prog_names_[i] == kFirstStateProgram) {
      first_missed = info.recursion_misses;
    } else if (attached_prog_names_[i] != kBackstopStateProgram) {
      (*out)[kCounterMissed] += info.recursion_misses;
    }
  }
  if (first_missed > (*out)[TRACKER_COUNTER_BACKSTOP]) (*out)[kCounterMissed] += first_missed - (*out)[TRACKER_COUNTER_BACKSTOP];
  return true;
}

}  // namespace scope_tracker
