// SPDX-License-Identifier: Apache-2.0
#include "tracker_wrap.h"

#include <bpf/libbpf.h>
#include <linux/types.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "../../bpf/tracker.h"
#include "js_errors.h"

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
constexpr const char* kErrRingBuffer = "ERR_BPF_RING_BUFFER";

constexpr uint32_t kDefaultRingBytes = 4u << 20;
constexpr uint32_t kMaxRingBytes = 1u << 30;
constexpr double kDefaultDrainMs = 20;
constexpr double kMaxDrainMs = 60000;
// An idle reader's epoll wait: the kernel's wake-up ends it at the first record; the bound only
// keeps a stop or a missed wake-up from waiting forever (the stop fd ends it too).
constexpr int kIdleWaitMs = 1000;

}  // namespace

void Tracker::RingBufferDeleter::operator()(ring_buffer* rb) const { ring_buffer__free(rb); }

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
  Napi::Function on_error_fn = v.As<Napi::Function>();

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

  BatchPipeOptions pipe_options;
  pipe_options.max_batch_bytes = kMaxBatchBytes;
  pipe_options.max_queued_batches = kMaxQueuedBatches;
  pipe_options.min_reserve_bytes = kMinReserve;
  pipe_options.error_code = kErrRingBuffer;
  pipe_options.thread_name = "scope-tracker";
  pipe_options.resource_name = "scope_tracker.Tracker";
  try {
    pipe_ = std::make_unique<BatchPipe>(env, static_cast<BatchSource*>(this), pipe_options);
  } catch (const std::exception& e) {
    throw WithCode(Napi::Error::New(env, e.what()), kErrLoad);
  }

  {
    epoll_fd_.Reset(epoll_create1(EPOLL_CLOEXEC));
    epoll_event ev{};
    ev.events = EPOLLIN;
    bool ok = epoll_fd_.get() >= 0;
    ev.data.fd = ring_buffer__epoll_fd(rb_.get());
    ok = ok && epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, ev.data.fd, &ev) == 0;
    ev.data.fd = pipe_->stop_fd();
    ok = ok && epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, ev.data.fd, &ev) == 0;
    if (!ok) {
      int err = errno;
      throw WithCode(Napi::Error::New(env, std::string("epoll setup: ") + std::strerror(err)), kErrLoad);
    }
  }

  try {
    pipe_->Start(info.This().As<Napi::Object>(), on_batch, on_error_fn, Napi::Function());
  } catch (const std::exception& e) {
    throw WithCode(Napi::Error::New(env, e.what()), kErrLoad);
  }
}

Tracker::~Tracker() {
  // Joins the producer while the ring buffer it drains still exists.
  if (pipe_) pipe_->Stop(false);
}

// ---------------------------------------------------------------- producer thread

// Timer mode (default): while records come, one drain per interval (a batch per interval, no
// wake-up per record); after a drain that found nothing, the thread sleeps in epoll until the
// kernel wakes it for the first record into the empty ring (bpf/tracker.bpf.c, submit_event), so
// an idle host costs no wake-ups. Wakeup mode: every round waits in epoll.
void Tracker::Produce(BatchProducer& out) {
  out_ = &out;
  auto next = std::chrono::steady_clock::now() + interval_;
  bool idle = false;
  for (;;) {
    bool final;
    if (!wakeup_ && !idle) {
      final = out.WaitUntil(next);
      auto now = std::chrono::steady_clock::now();
      next += interval_;
      if (next <= now) next = now + interval_;
    } else {
      epoll_event evs[2];
      int n = epoll_wait(epoll_fd_.get(), evs, 2, wakeup_ ? static_cast<int>(interval_.count()) : kIdleWaitMs);
      if (n < 0 && errno != EINTR) {
        out.Fail(errno, "ring buffer consumer failed");
        return;
      }
      final = out.stopping();
      // Woken by the first record of a burst (not the bound): give the rest of it one interval to arrive.
      if (!wakeup_ && !final && n > 0) final = out.WaitUntil(std::chrono::steady_clock::now() + interval_);
      next = std::chrono::steady_clock::now() + interval_;
    }

    // On the final round (stopping) this drains whatever the detached programs left.
    size_t consumed = 0;
    int err = ConsumeAll(&consumed);
    if (err) {
      out.Fail(err, "ring buffer consumer failed");
      return;
    }
    idle = consumed == 0;
    if (!out.Publish() || final) return;
  }
}

int Tracker::OnRecord(void* ctx, void* data, size_t size) {
  Tracker* self = static_cast<Tracker*>(ctx);
  if (size != kRecordSize) {
    // Not our layout (an object built from another bpf/tracker.h): never hand it to the decoder,
    // but count it, so that status can say the object and the addon disagree.
    self->bad_size_records_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  if (self->out_->Append(data, size)) {
    self->batch_full_ = true;
    return -1;  // record is consumed; stop here so the batch gets published
  }
  return 0;
}

// Drains everything in the ring, adding the records taken to *consumed. Returns 0 or a positive errno.
int Tracker::ConsumeAll(size_t* consumed) {
  for (;;) {
    batch_full_ = false;
    int n = ring_buffer__consume(rb_.get());
    if (n > 0) *consumed += static_cast<size_t>(n);
    if (n >= 0 || n == -EINTR) return 0;
    // Stopped early at a full batch (OnRecord returned -1): that record was taken too.
    if (!batch_full_) return -n;
    (*consumed)++;
    if (!out_->Publish()) return 0;
  }
}

// ---------------------------------------------------------------- JS thread (inside BatchPipe::Stop)

void Tracker::BeforeStop() {
  if (bpf_) bpf_->Detach();  // no new events; the producer's final drain sees them all
}

void Tracker::AfterJoin() {
  if (bpf_) bpf_->ReadCounters(&final_counters_);
  rb_.reset();
  epoll_fd_.Reset();
  bpf_.reset();
}

// ---------------------------------------------------------------- JS thread

Napi::Object Tracker::CountersObject(Napi::Env env, const scope_tracker::Counters& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("lost", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_LOST])));
  o.Set("failedConnects", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_FAILED_CONNECT])));
  o.Set("connectNoPid", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_CONNECT_NO_PID])));
  o.Set("acceptNoSock", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_ACCEPT_NO_SOCK])));
  o.Set("missed", Napi::Number::New(env, static_cast<double>(c[scope_tracker::kCounterMissed])));
  o.Set("badSizeRecords",
        Napi::Number::New(env, static_cast<double>(bad_size_records_.load(std::memory_order_relaxed))));
  o.Set("backstop", Napi::Number::New(env, static_cast<double>(c[TRACKER_COUNTER_BACKSTOP])));
  return o;
}

Napi::Value Tracker::Counters(const Napi::CallbackInfo& info) {
  if (!running() || !bpf_) return CountersObject(info.Env(), final_counters_);  // values at stop()
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
  if (running() && bpf_) {
    uint32_t i = 0;
    for (const std::string& name : bpf_->attached()) out.Set(i++, Napi::String::New(info.Env(), name));
  }
  return out;
}

Napi::Value Tracker::Attachments(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  if (running() && bpf_) {
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
  if (pipe_) pipe_->Stop(true);
  return info.Env().Undefined();
}

Napi::Value Tracker::RefLoop(const Napi::CallbackInfo& info) {
  if (pipe_) pipe_->Ref();
  return info.This();
}

Napi::Value Tracker::UnrefLoop(const Napi::CallbackInfo& info) {
  if (pipe_) pipe_->Unref();
  return info.This();
}

}  // namespace scope_tracker
