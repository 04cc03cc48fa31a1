// SPDX-License-Identifier: Apache-2.0
#include "tracker_wrap.h"

#include <bpf/libbpf.h>
#include <linux/types.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "../../bpf/tracker.h"

namespace scope_tracker {
namespace {

constexpr size_t kRecordSize = sizeof(struct tracker_event);
static_assert(kRecordSize == 80, "bpf/tracker.h: struct tracker_event must stay 80 bytes");

// A batch is cut at this size (whole records), so one drain of a full 4 MiB ring
// becomes several onBatch calls instead of one huge allocation.
constexpr size_t kMaxBatchBytes = (256 * 1024 / kRecordSize) * kRecordSize;
constexpr size_t kMinReserve = 64 * kRecordSize;
// Batches handed over but not yet taken by the JS thread. When JS stalls the
// consumer stops draining, the kernel ring fills and losses are counted there.
constexpr size_t kMaxQueuedBatches = 64;

constexpr uint32_t kDefaultRingBytes = 4u << 20;
constexpr uint32_t kMaxRingBytes = 1u << 30;
constexpr double kDefaultDrainMs = 20;
constexpr double kMaxDrainMs = 60000;

Napi::Error WithCode(Napi::Error err, const char* code) {
  err.Set("code", Napi::String::New(err.Env(), code));
  return err;
}

[[noreturn]] void ThrowType(Napi::Env env, const std::string& message) {
  throw WithCode(Napi::TypeError::New(env, message), "ERR_INVALID_ARG_TYPE");
}

[[noreturn]] void ThrowRange(Napi::Env env, const std::string& message) {
  throw WithCode(Napi::RangeError::New(env, message), "ERR_OUT_OF_RANGE");
}

}  // namespace

void Tracker::RingBufferDeleter::operator()(ring_buffer* rb) const { ring_buffer__free(rb); }

void Tracker::Fd::Reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

Napi::Function Tracker::Init(Napi::Env env) {
  return DefineClass(env, "Tracker",
                     {
                         InstanceMethod<&Tracker::Counters>("counters"),
                         InstanceMethod<&Tracker::AttachedPrograms>("attachedPrograms"),
                         InstanceMethod<&Tracker::Attachments>("attachments"),
                         InstanceMethod<&Tracker::Stop>("stop"),
                         InstanceMethod<&Tracker::RefLoop>("ref"),
                         InstanceMethod<&Tracker::UnrefLoop>("unref"),
                     });
}

Tracker::Tracker(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tracker>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) ThrowType(env, "new Tracker(options): options must be an object");
  Napi::Object opts = info[0].As<Napi::Object>();

  BpfOptions bpf_options;
  Napi::Value v = opts.Get("objectPath");
  if (!v.IsString() || v.As<Napi::String>().Utf8Value().empty()) {
    ThrowType(env, "options.objectPath must be a non-empty string");
  }
  bpf_options.object_path = v.As<Napi::String>().Utf8Value();

  v = opts.Get("ringBufferBytes");
  if (!v.IsUndefined()) {
    if (!v.IsNumber()) ThrowType(env, "options.ringBufferBytes must be a number");
    double bytes = v.As<Napi::Number>().DoubleValue();
    long page = sysconf(_SC_PAGESIZE);
    double min = page > 4096 ? static_cast<double>(page) : 4096.0;
    uint64_t n = bytes >= 1 && bytes <= kMaxRingBytes ? static_cast<uint64_t>(bytes) : 0;
    if (static_cast<double>(n) != bytes || n < min || (n & (n - 1)) != 0) {
      ThrowRange(env, "options.ringBufferBytes must be a power of two between " + std::to_string(static_cast<long>(min)) +
                          " and " + std::to_string(kMaxRingBytes) + ", got " + v.ToString().Utf8Value());
    }
    bpf_options.ring_buffer_bytes = static_cast<uint32_t>(n);
  } else {
    bpf_options.ring_buffer_bytes = kDefaultRingBytes;
  }

  v = opts.Get("drainIntervalMs");
  double drain_ms = kDefaultDrainMs;
  if (!v.IsUndefined()) {
    if (!v.IsNumber()) ThrowType(env, "options.drainIntervalMs must be a number");
    drain_ms = v.As<Napi::Number>().DoubleValue();
    if (!(drain_ms >= 1 && drain_ms <= kMaxDrainMs)) {
      ThrowRange(env, "options.drainIntervalMs must be between 1 and 60000, got " + v.ToString().Utf8Value());
    }
  }
  interval_ = std::chrono::milliseconds(static_cast<long>(std::lround(drain_ms)));

  v = opts.Get("wakeup");
  if (!v.IsUndefined()) {
    if (!v.IsBoolean()) ThrowType(env, "options.wakeup must be a boolean");
    wakeup_ = v.As<Napi::Boolean>().Value();
  }
  bpf_options.wakeup = wakeup_;
  v = opts.Get("tracepointsOnly");
  if (!v.IsUndefined()) {
    if (!v.IsBoolean()) ThrowType(env, "options.tracepointsOnly must be a boolean");
    bpf_options.tracepoints_only = v.As<Napi::Boolean>().Value();
  }

  v = opts.Get("onBatch");
  if (!v.IsFunction()) ThrowType(env, "options.onBatch must be a function");
  Napi::Function on_batch = v.As<Napi::Function>();
  v = opts.Get("onError");
  if (!v.IsFunction()) ThrowType(env, "options.onError must be a function");
  on_error_ = Napi::Persistent(v.As<Napi::Function>());
  on_batch_ = Napi::Persistent(on_batch);

  try {
    bpf_ = BpfSession::Open(bpf_options);
  } catch (const BpfError& e) {
    throw WithCode(Napi::Error::New(env, e.what()), e.code());
  }

  rb_.reset(ring_buffer__new(bpf_->events_fd(), &Tracker::OnRecord, this, nullptr));
  if (!rb_) {
    int err = errno;
    throw WithCode(Napi::Error::New(env, std::string("ring_buffer__new: ") + std::strerror(err)), kErrLoad);
  }

  if (wakeup_) {
    epoll_fd_.Reset(epoll_create1(EPOLL_CLOEXEC));
    stop_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    epoll_event ev{};
    ev.events = EPOLLIN;
    bool ok = epoll_fd_.get() >= 0 && stop_fd_.get() >= 0;
    ev.data.fd = ring_buffer__epoll_fd(rb_.get());
    ok = ok && epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, ev.data.fd, &ev) == 0;
    ev.data.fd = stop_fd_.get();
    ok = ok && epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, ev.data.fd, &ev) == 0;
    if (!ok) {
      int err = errno;
      throw WithCode(Napi::Error::New(env, std::string("epoll setup: ") + std::strerror(err)), kErrLoad);
    }
  }

  // The TSFN is only a doorbell: batches travel through ready_ (bounded), so its own
  // queue is unbounded but holds at most one pending call (wake_pending_).
  link_ = new Link{this};
  napi_status status = napi_create_threadsafe_function(
      env, on_batch, nullptr, Napi::String::New(env, "scope_tracker.Tracker"), 0, 1, link_, &Tracker::TsfnFinalize,
      link_, &Tracker::CallJs, &tsfn_);
  if (status != napi_ok) {
    delete link_;
    link_ = nullptr;
    throw WithCode(Napi::Error::New(env, "napi_create_threadsafe_function failed"), kErrLoad);
  }

  try {
    thread_ = std::thread(&Tracker::Run, this);
  } catch (const std::system_error& e) {
    napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
    tsfn_ = nullptr;
    throw WithCode(Napi::Error::New(env, std::string("cannot start consumer thread: ") + e.what()), kErrLoad);
  }
  running_ = true;
  napi_add_env_cleanup_hook(env, &Tracker::EnvCleanup, this);
  cleanup_hook_ = true;
  // A running tracker stays alive (like a server) until stop(); released by TsfnFinalize.
  Ref();
}

Tracker::~Tracker() {
  Shutdown(Env(), false);
  if (link_) link_->tracker = nullptr;
}

// ---------------------------------------------------------------- consumer thread

void Tracker::Run() {
  // Signals belong to the JS thread.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  pthread_setname_np(pthread_self(), "scope-tracker");

  auto next = std::chrono::steady_clock::now() + interval_;
  for (;;) {
    bool final;
    if (!wakeup_) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_cv_.wait_until(lock, next, [this] { return stopping_; });
      final = stopping_;
      auto now = std::chrono::steady_clock::now();
      next += interval_;
      if (next <= now) next = now + interval_;
    } else {
      epoll_event evs[2];
      int n = epoll_wait(epoll_fd_.get(), evs, 2, static_cast<int>(interval_.count()));
      if (n < 0 && errno != EINTR) {
        Fail(errno);
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      final = stopping_;
    }

    int err = ConsumeAll(final);
    if (err) {
      Fail(err);
      return;
    }
    if (!Publish(final) || final) return;
  }
}

int Tracker::OnRecord(void* ctx, void* data, size_t size) {
  Tracker* self = static_cast<Tracker*>(ctx);
  if (size != kRecordSize) return 0;  // not our layout: never hand it to the decoder
  if (!self->current_) {
    self->current_ = std::make_unique<Batch>();
    self->current_->reserve(self->next_reserve_ ? self->next_reserve_ : kMinReserve);
  }
  const uint8_t* p = static_cast<const uint8_t*>(data);
  self->current_->insert(self->current_->end(), p, p + size);
  if (self->current_->size() >= kMaxBatchBytes) {
    self->batch_full_ = true;
    return -1;  // record is consumed; stop here so the batch gets published
  }
  return 0;
}

// Drains everything in the ring. Returns 0 or a positive errno.
int Tracker::ConsumeAll(bool final) {
  for (;;) {
    batch_full_ = false;
    int n = ring_buffer__consume(rb_.get());
    if (n >= 0 || n == -EINTR) return 0;
    if (!batch_full_) return -n;
    if (!Publish(final)) return 0;
  }
}

// Moves the current batch to ready_, waiting for room unless stopping, and rings the
// JS thread. Returns false when the TSFN is closing (environment shutting down).
bool Tracker::Publish(bool final) {
  if (!current_ || current_->empty()) return true;
  size_t used = current_->size();
  next_reserve_ = std::min(kMaxBatchBytes, std::max(kMinReserve, used + used / 4));
  std::unique_ptr<Batch> batch = std::move(current_);
  bool post = false;
  {
    std::unique_lock<std::mutex> lock(mu_);
    space_cv_.wait(lock, [this] { return ready_.size() < kMaxQueuedBatches || stopping_; });
    ready_.push_back(std::move(batch));
    // When stopping, Shutdown delivers ready_ itself after joining us.
    if (!final && !stopping_ && !wake_pending_) {
      wake_pending_ = true;
      post = true;
    }
  }
  return post ? PostWake() : true;
}

bool Tracker::PostWake() {
  napi_status status = napi_call_threadsafe_function(tsfn_, nullptr, napi_tsfn_nonblocking);
  if (status == napi_ok) return true;
  std::lock_guard<std::mutex> lock(mu_);
  wake_pending_ = false;
  return false;  // napi_closing: the environment is going away; Shutdown will join us
}

void Tracker::Fail(int err) {
  Publish(false);  // records read before the failure still go out first
  bool post = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    consumer_error_ = err ? err : EIO;
    if (!stopping_) {
      wake_pending_ = true;
      post = true;
    }
  }
  if (post) PostWake();
}

// ---------------------------------------------------------------- JS thread

void Tracker::CallJs(napi_env env, napi_value /*js_cb*/, void* context, void* /*data*/) {
  Link* link = static_cast<Link*>(context);
  if (env == nullptr || link == nullptr || link->tracker == nullptr) return;
  Napi::Env e(env);
  try {
    link->tracker->DeliverFromQueue(e);
  } catch (const Napi::Error& err) {
    err.ThrowAsJavaScriptException();  // surfaces as an uncaught exception
  } catch (const std::exception& err) {
    Napi::Error::New(e, err.what()).ThrowAsJavaScriptException();
  }
}

void Tracker::TsfnFinalize(napi_env /*env*/, void* data, void* /*hint*/) {
  Link* link = static_cast<Link*>(data);
  Tracker* self = link->tracker;
  delete link;
  if (!self) return;
  self->link_ = nullptr;
  self->tsfn_ = nullptr;
  self->Unref();  // stopped and drained: the object may now be collected
}

void Tracker::EnvCleanup(void* arg) {
  Tracker* self = static_cast<Tracker*>(arg);
  self->cleanup_hook_ = false;  // being run, hence removed
  self->Shutdown(nullptr, false);
}

void Tracker::DeliverFromQueue(Napi::Env env) {
  if (!running_) return;  // Shutdown already delivered what was left
  std::deque<std::unique_ptr<Batch>> batches;
  int err;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_pending_ = false;
    batches.swap(ready_);
    err = consumer_error_;
  }
  space_cv_.notify_all();

  std::unique_ptr<Napi::Error> first;
  for (auto& batch : batches) {
    try {
      DeliverBatch(env, std::move(batch));
    } catch (const Napi::Error& e) {
      if (!first) first = std::make_unique<Napi::Error>(e);
    }
  }
  if (err && !error_reported_) {
    error_reported_ = true;
    Shutdown(env, true);
    Napi::Error error = WithCode(
        Napi::Error::New(env, std::string("ring buffer consumer failed: ") + std::strerror(err)), "ERR_BPF_RING_BUFFER");
    try {
      on_error_.Call({error.Value()});
    } catch (const Napi::Error& e) {
      if (!first) first = std::make_unique<Napi::Error>(e);
    }
  }
  if (first) throw *first;
}

void Tracker::DeliverBatch(Napi::Env env, std::unique_ptr<Batch> batch) {
  if (!batch || batch->empty()) return;
  Batch* raw = batch.release();
  int64_t external = static_cast<int64_t>(raw->capacity());
  // Zero copy: the Buffer owns the vector and frees it when collected.
  Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::New(
      env, raw->data(), raw->size(),
      [](Napi::Env fin_env, uint8_t*, Batch* hint) {
        Napi::MemoryManagement::AdjustExternalMemory(fin_env, -static_cast<int64_t>(hint->capacity()));
        delete hint;
      },
      raw);
  Napi::MemoryManagement::AdjustExternalMemory(env, external);
  on_batch_.Call({buffer});
}

void Tracker::Shutdown(napi_env env, bool deliver) {
  if (!running_) return;
  running_ = false;

  if (bpf_) bpf_->Detach();  // no new events; the thread's final drain sees them all
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_cv_.notify_all();
  space_cv_.notify_all();
  if (stop_fd_.get() >= 0) {
    uint64_t one = 1;
    ssize_t ignored = write(stop_fd_.get(), &one, sizeof(one));
    (void)ignored;
  }
  if (thread_.joinable()) thread_.join();

  if (bpf_) bpf_->ReadCounters(&final_counters_);
  rb_.reset();
  epoll_fd_.Reset();
  stop_fd_.Reset();
  bpf_.reset();

  if (cleanup_hook_ && env) napi_remove_env_cleanup_hook(env, &Tracker::EnvCleanup, this);
  cleanup_hook_ = false;

  std::deque<std::unique_ptr<Batch>> batches;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batches.swap(ready_);
  }
  current_.reset();

  if (tsfn_) {
    // Pending doorbells still run (and find nothing); then TsfnFinalize unrefs us.
    napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
  }

  if (!deliver || !env) return;
  Napi::Env e(env);
  std::unique_ptr<Napi::Error> first;
  for (auto& batch : batches) {
    try {
      DeliverBatch(e, std::move(batch));
    } catch (const Napi::Error& err) {
      if (!first) first = std::make_unique<Napi::Error>(err);
    }
  }
  if (first) throw *first;
}

Napi::Object Tracker::CountersObject(Napi::Env env, const scope_tracker::Counters& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("lost", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_LOST])));
  o.Set("failedConnects", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_FAILED_CONNECT])));
  o.Set("connectNoPid", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_CONNECT_NO_PID])));
  o.Set("acceptNoSock", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_ACCEPT_NO_SOCK])));
  o.Set("missed", Napi::Number::New(env, static_cast<double>(c[scope_tracker::kCounterMissed])));
  o.Set("backstop", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_BACKSTOP])));
  return o;
}

Napi::Value Tracker::Counters(const Napi::CallbackInfo& info) {
  if (!running_ || !bpf_) return CountersObject(info.Env(), final_counters_);  // values at stop()
  scope_tracker::Counters c;
  if (!bpf_->ReadCounters(&c)) {
    int err = errno;
    throw WithCode(Napi::Error::New(info.Env(), std::string("read counters map: ") + std::strerror(err)),
                   "ERR_BPF_MAP");
  }
  return CountersObject(info.Env(), c);
}

Napi::Value Tracker::AttachedPrograms(const Napi::CallbackInfo& info) {
  Napi::Array out = Napi::Array::New(info.Env());
  if (running_ && bpf_) {
    uint32_t i = 0;
    for (const std::string& name : bpf_->attached()) out.Set(i++, Napi::String::New(info.Env(), name));
  }
  return out;
}

Napi::Value Tracker::Attachments(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  if (running_ && bpf_) {
    uint32_t i = 0;
    for (const scope_tracker::Attachment& a : bpf_->attachments()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("hook", a.hook);
      o.Set("type", a.type.empty() ? env.Null() : Napi::String::New(env, a.type));
      o.Set("program", a.section.empty() ? env.Null() : Napi::String::New(env, a.section));
      o.Set("reason", a.reason);
      out.Set(i++, o);
    }
  }
  return out;
}

Napi::Value Tracker::Stop(const Napi::CallbackInfo& info) {
  Shutdown(info.Env(), true);
  return info.Env().Undefined();
}

Napi::Value Tracker::RefLoop(const Napi::CallbackInfo& info) {
  if (running_ && tsfn_) napi_ref_threadsafe_function(info.Env(), tsfn_);
  return info.This();
}

Napi::Value Tracker::UnrefLoop(const Napi::CallbackInfo& info) {
  if (running_ && tsfn_) napi_unref_threadsafe_function(info.Env(), tsfn_);
  return info.This();
}

}  // namespace scope_tracker
