// SPDX-License-Identifier: Apache-2.0
#include "conntrack_wrap.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

namespace scope_tracker {
namespace {

constexpr size_t kRecord = sizeof(CtRecord);
constexpr size_t kMaxBatchBytes = (256 * 1024 / kRecord) * kRecord;
// 64 x 256 KiB in flight at most; past that the reader stops and the kernel drops (counted).
constexpr size_t kMaxQueuedBatches = 64;
constexpr size_t kRxBytes = 256 * 1024;
constexpr int kDefaultReceiveBuffer = 8 << 20;
// A storm that keeps overflowing the socket would otherwise mean back-to-back dumps.
constexpr auto kMinDumpSpacing = std::chrono::seconds(1);

Napi::Error WithCode(Napi::Error err, const char* code, int errnum = 0) {
  err.Set("code", Napi::String::New(err.Env(), code));
  if (errnum) err.Set("errno", Napi::Number::New(err.Env(), errnum));
  return err;
}

}  // namespace

Napi::Function Conntrack::Init(Napi::Env env) {
  return DefineClass(env, "Conntrack",
                     {
                         InstanceMethod<&Conntrack::Counters>("counters"),
                         InstanceMethod<&Conntrack::Stop>("stop"),
                         InstanceMethod<&Conntrack::RequestDump>("requestDump"),
                     });
}

Conntrack::Conntrack(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Conntrack>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    throw WithCode(Napi::TypeError::New(env, "new Conntrack(options): options must be an object"), "ERR_INVALID_ARG_TYPE");
  }
  Napi::Object opts = info[0].As<Napi::Object>();
  Napi::Value on_batch = opts.Get("onBatch");
  Napi::Value on_error = opts.Get("onError");
  if (!on_batch.IsFunction() || !on_error.IsFunction()) {
    throw WithCode(Napi::TypeError::New(env, "options.onBatch and options.onError must be functions"), "ERR_INVALID_ARG_TYPE");
  }
  int rcvbuf = kDefaultReceiveBuffer;
  Napi::Value v = opts.Get("receiveBufferBytes");
  if (!v.IsUndefined()) {
    double bytes = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(bytes >= 4096 && bytes <= (1 << 30))) {
      throw WithCode(Napi::RangeError::New(env, "options.receiveBufferBytes must be between 4096 and 2^30"), "ERR_OUT_OF_RANGE");
    }
    rcvbuf = static_cast<int>(bytes);
  }
  v = opts.Get("drainIntervalMs");
  if (!v.IsUndefined()) {
    double ms = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(ms >= 1 && ms <= 60000)) {
      throw WithCode(Napi::RangeError::New(env, "options.drainIntervalMs must be between 1 and 60000"), "ERR_OUT_OF_RANGE");
    }
    interval_ = std::chrono::milliseconds(static_cast<long>(std::lround(ms)));
  }

  try {
    events_.OpenEvents(rcvbuf);
    dump_.OpenDump();
  } catch (const CtError& e) {
    throw WithCode(Napi::Error::New(env, e.what), "ERR_CONNTRACK", e.err);
  }
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) throw WithCode(Napi::Error::New(env, "eventfd failed"), "ERR_CONNTRACK", errno);
  rx_.resize(kRxBytes);
  on_batch_ = Napi::Persistent(on_batch.As<Napi::Function>());
  on_error_ = Napi::Persistent(on_error.As<Napi::Function>());

  link_ = new Link{this};
  if (napi_create_threadsafe_function(env, on_batch, nullptr, Napi::String::New(env, "scope_tracker.Conntrack"), 0, 1,
                                      link_, &Conntrack::TsfnFinalize, link_, &Conntrack::CallJs, &tsfn_) != napi_ok) {
    delete link_;
    link_ = nullptr;
    close(stop_fd_);
    throw WithCode(Napi::Error::New(env, "napi_create_threadsafe_function failed"), "ERR_CONNTRACK");
  }
  thread_ = std::thread(&Conntrack::Run, this);
  running_ = true;
  napi_add_env_cleanup_hook(env, &Conntrack::EnvCleanup, this);
  cleanup_hook_ = true;
  // Unlike the eBPF reader, conntrack never keeps the process alive on its own.
  napi_unref_threadsafe_function(env, tsfn_);
  Ref();
}

Conntrack::~Conntrack() {
  Shutdown(Env());
  if (link_) link_->self = nullptr;
}

// ---------------------------------------------------------------- reader thread

bool Conntrack::Stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

void Conntrack::Run() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  pthread_setname_np(pthread_self(), "scope-conntrack");
  last_publish_ = std::chrono::steady_clock::now();
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    if (dump_requested_.load() && now >= next_dump_allowed_) {
      dump_requested_ = false;
      next_dump_allowed_ = now + kMinDumpSpacing;
      if (!Dump()) return;
    }
    pollfd fds[2] = {{events_.fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int n = poll(fds, 2, static_cast<int>(interval_.count()));
    if (n < 0 && errno != EINTR) return Fail(errno, "poll");
    if (Stopping()) {
      Publish();
      return;
    }
    if (!DrainEvents()) return;
    if (std::chrono::steady_clock::now() - last_publish_ >= interval_ && !Publish()) return;
  }
}

void Conntrack::Marker(CtRecordKind kind, uint32_t count) {
  CtRecord r{};
  r.kind = kind;
  r.tcp_state = kCtNoState;
  r.count = count;
  if (!current_) current_ = std::make_unique<Batch>();
  const uint8_t* p = reinterpret_cast<const uint8_t*>(&r);
  current_->insert(current_->end(), p, p + kRecord);
}

bool Conntrack::Dump() {
  uint32_t seq = static_cast<uint32_t>(++dumps_);
  try {
    dump_.RequestDump(seq);
  } catch (const CtError& e) {
    Fail(e.err, e.what);
    return false;
  }
  Marker(kCtDumpBegin, seq);
  uint32_t flows = 0;
  for (;;) {
    ssize_t got = recv(dump_.fd(), rx_.data(), rx_.size(), 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (Stopping()) return false;
        continue;
      }
      if (errno == ENOBUFS) {  // the dump itself overran: start it again later
        dump_requested_ = true;
        break;
      }
      Fail(errno, "read the conntrack dump");
      return false;
    }
    if (!current_) current_ = std::make_unique<Batch>();
    ParseResult r = ParseCtMessages(rx_.data(), static_cast<size_t>(got), true, current_.get());
    flows += static_cast<uint32_t>(r.records);
    records_ += r.records;
    malformed_ += r.malformed;
    if (r.error) {
      Fail(r.error, "conntrack dump refused");
      return false;
    }
    if (current_->size() >= kMaxBatchBytes && !Publish()) return false;
    if (r.done) break;
  }
  Marker(kCtDumpEnd, flows);
  return Publish();
}

bool Conntrack::DrainEvents() {
  for (;;) {
    ssize_t got = recv(events_.fd(), rx_.data(), rx_.size(), MSG_DONTWAIT);
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        // The kernel dropped events for us: say so, and read the table again.
        Marker(kCtLost, static_cast<uint32_t>(++enobufs_));
        dump_requested_ = true;
        continue;
      }
      Fail(errno, "read conntrack events");
      return false;
    }
    if (!current_) current_ = std::make_unique<Batch>();
    ParseResult r = ParseCtMessages(rx_.data(), static_cast<size_t>(got), false, current_.get());
    records_ += r.records;
    malformed_ += r.malformed;
    if (current_->size() >= kMaxBatchBytes && !Publish()) return false;
  }
}

bool Conntrack::Publish() {
  last_publish_ = std::chrono::steady_clock::now();
  if (!current_ || current_->empty()) return true;
  std::unique_ptr<Batch> batch = std::move(current_);
  bool post = false;
  {
    std::unique_lock<std::mutex> lock(mu_);
    space_cv_.wait(lock, [this] { return ready_.size() < kMaxQueuedBatches || stopping_; });
    if (stopping_) return false;
    ready_.push_back(std::move(batch));
    if (!wake_pending_) {
      wake_pending_ = true;
      post = true;
    }
  }
  if (post && napi_call_threadsafe_function(tsfn_, nullptr, napi_tsfn_nonblocking) != napi_ok) {
    std::lock_guard<std::mutex> lock(mu_);
    wake_pending_ = false;
    return false;
  }
  return true;
}

void Conntrack::Fail(int err, const std::string& what) {
  Publish();
  bool post = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = err ? err : EIO;
    error_what_ = what;
    if (!stopping_ && !wake_pending_) {
      wake_pending_ = true;
      post = true;
    }
  }
  if (post) napi_call_threadsafe_function(tsfn_, nullptr, napi_tsfn_nonblocking);
}

// ---------------------------------------------------------------- JS thread

void Conntrack::CallJs(napi_env env, napi_value, void* context, void*) {
  Link* link = static_cast<Link*>(context);
  if (env == nullptr || link == nullptr || link->self == nullptr) return;
  Napi::Env e(env);
  try {
    link->self->Deliver(e);
  } catch (const Napi::Error& err) {
    err.ThrowAsJavaScriptException();
  }
}

void Conntrack::TsfnFinalize(napi_env, void* data, void*) {
  Link* link = static_cast<Link*>(data);
  Conntrack* self = link->self;
  delete link;
  if (!self) return;
  self->link_ = nullptr;
  self->tsfn_ = nullptr;
  self->Unref();
}

void Conntrack::EnvCleanup(void* arg) {
  Conntrack* self = static_cast<Conntrack*>(arg);
  self->cleanup_hook_ = false;
  self->Shutdown(nullptr);
}

void Conntrack::Deliver(Napi::Env env) {
  if (!running_) return;
  std::deque<std::unique_ptr<Batch>> batches;
  int err;
  std::string what;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_pending_ = false;
    batches.swap(ready_);
    err = error_;
    what = error_what_;
  }
  space_cv_.notify_all();
  for (auto& batch : batches) DeliverBatch(env, std::move(batch));
  if (err) {
    Shutdown(env);
    Napi::Error error = WithCode(Napi::Error::New(env, what + ": " + std::strerror(err)), "ERR_CONNTRACK", err);
    on_error_.Call({error.Value()});
  }
}

void Conntrack::DeliverBatch(Napi::Env env, std::unique_ptr<Batch> batch) {
  if (!batch || batch->empty()) return;
  Batch* raw = batch.release();
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(raw->capacity()));
  Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::New(
      env, raw->data(), raw->size(),
      [](Napi::Env fin_env, uint8_t*, Batch* hint) {
        Napi::MemoryManagement::AdjustExternalMemory(fin_env, -static_cast<int64_t>(hint->capacity()));
        delete hint;
      },
      raw);
  on_batch_.Call({buffer});
}

void Conntrack::Shutdown(napi_env env) {
  if (!running_) return;
  running_ = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  space_cv_.notify_all();
  uint64_t one = 1;
  ssize_t ignored = write(stop_fd_, &one, sizeof(one));
  (void)ignored;
  if (thread_.joinable()) thread_.join();
  close(stop_fd_);
  stop_fd_ = -1;
  if (cleanup_hook_ && env) napi_remove_env_cleanup_hook(env, &Conntrack::EnvCleanup, this);
  cleanup_hook_ = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ready_.clear();  // a stopped source's last records are of no use to anyone
  }
  current_.reset();
  if (tsfn_) napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
}

Napi::Value Conntrack::Counters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("enobufs", Napi::Number::New(env, static_cast<double>(enobufs_.load())));
  o.Set("dumps", Napi::Number::New(env, static_cast<double>(dumps_.load())));
  o.Set("malformed", Napi::Number::New(env, static_cast<double>(malformed_.load())));
  o.Set("records", Napi::Number::New(env, static_cast<double>(records_.load())));
  return o;
}

Napi::Value Conntrack::Stop(const Napi::CallbackInfo& info) {
  Shutdown(info.Env());
  return info.Env().Undefined();
}

Napi::Value Conntrack::RequestDump(const Napi::CallbackInfo& info) {
  dump_requested_ = true;
  return info.Env().Undefined();
}

}  // namespace scope_tracker
