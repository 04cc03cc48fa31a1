// SPDX-License-Identifier: Apache-2.0
#include "conntrack_wrap.h"
#include "js_errors.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cmath>
#include <cstring>

namespace scope_tracker {
namespace {

constexpr size_t kRecord = sizeof(CtRecord);
// 64 batches of 256 KiB in flight at most; past that the producer stops reading and the kernel
// drops (counted as ENOBUFS).
constexpr size_t kMaxBatchBytes = (256 * 1024 / kRecord) * kRecord;
constexpr size_t kMaxQueuedBatches = 64;
constexpr size_t kRxBytes = 256 * 1024;
// An event message is a few hundred bytes; 64 slots of 4 KiB fill kRxBytes.
constexpr size_t kEventSlot = 4096;
constexpr size_t kEventsPerCall = kRxBytes / kEventSlot;
constexpr int kDefaultReceiveBuffer = 8 << 20;
// A storm that keeps overflowing the socket would otherwise mean back-to-back dumps.
constexpr auto kMinDumpSpacing = std::chrono::seconds(1);
constexpr const char* kErrConntrack = "ERR_CONNTRACK";

}  // namespace

Napi::Function Conntrack::Init(Napi::Env env) {
  return DefineClass(env, "Conntrack",
                     {
                         InstanceMethod<&Conntrack::Counters>("counters"),
                         InstanceMethod<&Conntrack::Stop>("stop"),
                         InstanceMethod<&Conntrack::RequestDump>("requestDump"),
                         InstanceMethod<&Conntrack::SetUpdates>("setUpdates"),
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
  size_t max_queued = kMaxQueuedBatches;
  v = opts.Get("maxQueuedBatches");
  if (!v.IsUndefined()) {
    double n = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(n >= 1 && n <= 1024)) {
      throw WithCode(Napi::RangeError::New(env, "options.maxQueuedBatches must be between 1 and 1024"), "ERR_OUT_OF_RANGE");
    }
    max_queued = static_cast<size_t>(n);
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
    throw WithCode(Napi::Error::New(env, e.what), kErrConntrack, e.err);
  }
  rx_.resize(kRxBytes);
  parsed_.reserve(kMaxBatchBytes);
  wake_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake_.get() < 0) {
    int err = errno;
    throw WithCode(Napi::Error::New(env, std::string("conntrack reader: eventfd: ") + std::strerror(err)), kErrConntrack, err);
  }

  BatchPipeOptions pipe_options;
  pipe_options.max_batch_bytes = kMaxBatchBytes;
  pipe_options.max_queued_batches = max_queued;
  pipe_options.min_reserve_bytes = 64 * kRecord;
  pipe_options.error_code = kErrConntrack;
  pipe_options.thread_name = "scope-conntrack";
  pipe_options.resource_name = "scope_tracker.Conntrack";
  try {
    pipe_ = std::make_unique<BatchPipe>(env, static_cast<BatchSource*>(this), pipe_options);
    pipe_->Start(info.This().As<Napi::Object>(), on_batch.As<Napi::Function>(), on_error.As<Napi::Function>(),
                 Napi::Function());
  } catch (const std::exception& e) {
    throw WithCode(Napi::Error::New(env, std::string("conntrack reader: ") + e.what()), kErrConntrack);
  }
  // Unlike the eBPF reader, conntrack never keeps the process alive on its own.
  pipe_->Unref();
}

Conntrack::~Conntrack() {
  if (pipe_) pipe_->Stop(false);
}

// ---------------------------------------------------------------- producer thread

void Conntrack::Produce(BatchProducer& out) {
  auto last_publish = std::chrono::steady_clock::now();
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    if (dump_requested_.load() && now >= next_dump_allowed_) {
      dump_requested_ = false;
      next_dump_allowed_ = now + kMinDumpSpacing;
      if (!Dump(out)) return;
      last_publish = std::chrono::steady_clock::now();
    }
    // With nothing waiting to go out the thread sleeps until an event, a dump request or the
    // stop; with records appended, only until their batch is due.
    int timeout = -1;
    if (out.pending_bytes() > 0) {
      auto due = last_publish + interval_ - std::chrono::steady_clock::now();
      timeout = std::max(0, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(due).count()));
    } else if (dump_requested_.load()) {
      auto due = next_dump_allowed_ - std::chrono::steady_clock::now();
      timeout = std::max(0, static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(due).count()));
    }
    pollfd fds[3] = {{events_.fd(), POLLIN, 0}, {out.stop_fd(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    int n = poll(fds, 3, timeout);
    if (n < 0 && errno != EINTR) return out.Fail(errno, "poll the conntrack socket");
    if (out.stopping()) return;
    if (n > 0 && (fds[2].revents & POLLIN)) {
      uint64_t ignored;
      while (read(wake_.get(), &ignored, sizeof ignored) < 0 && errno == EINTR) {
      }
    }
    if (!DrainEvents(out)) return;
    // Events are batched for up to one interval: one JS call per interval, not per event.
    if (std::chrono::steady_clock::now() - last_publish >= interval_) {
      if (!out.Publish()) return;
      last_publish = std::chrono::steady_clock::now();
    }
  }
}

void Conntrack::Marker(BatchProducer& out, CtRecordKind kind, uint32_t count) {
  CtRecord r{};
  r.kind = kind;
  r.tcp_state = kCtNoState;
  r.count = count;
  out.Append(&r, sizeof(r));
}

bool Conntrack::Dump(BatchProducer& out) {
  uint32_t seq = static_cast<uint32_t>(++dumps_);
  try {
    dump_.RequestDump(seq);
  } catch (const CtError& e) {
    out.Fail(e.err, e.what);
    return false;
  }
  Marker(out, kCtDumpBegin, seq);
  uint32_t flows = 0;
  for (;;) {
    ssize_t got = recv(dump_.fd(), rx_.data(), rx_.size(), 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (out.stopping()) return false;
        continue;
      }
      if (errno == ENOBUFS) {  // the dump itself overran: read the table again later
        dump_requested_ = true;
        break;
      }
      out.Fail(errno, "read the conntrack dump");
      return false;
    }
    parsed_.clear();
    ParseResult r = ParseCtMessages(rx_.data(), static_cast<size_t>(got), true, &parsed_);
    flows += static_cast<uint32_t>(r.records);
    records_ += r.records;
    malformed_ += r.malformed;
    if (r.error) {
      out.Fail(r.error, "conntrack dump refused");
      return false;
    }
    if (out.Append(parsed_.data(), parsed_.size()) && !out.Publish()) return false;
    if (r.done) break;
  }
  Marker(out, kCtDumpEnd, flows);
  return out.Publish();
}

bool Conntrack::DrainEvents(BatchProducer& out) {
  // Each event is a datagram of its own: up to kEventsPerCall of them per syscall.
  mmsghdr msgs[kEventsPerCall];
  iovec iov[kEventsPerCall];
  for (size_t i = 0; i < kEventsPerCall; i++) {
    iov[i] = {rx_.data() + i * kEventSlot, kEventSlot};
    msgs[i] = {};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  for (;;) {
    int got = recvmmsg(events_.fd(), msgs, kEventsPerCall, MSG_DONTWAIT, nullptr);
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        // The kernel dropped events for us: say so, and read the table again.
        Marker(out, kCtLost, static_cast<uint32_t>(++enobufs_));
        dump_requested_ = true;
        continue;
      }
      out.Fail(errno, "read conntrack events");
      return false;
    }
    parsed_.clear();
    for (int i = 0; i < got; i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        malformed_++;
        continue;
      }
      ParseResult r = ParseCtMessages(rx_.data() + i * kEventSlot, msgs[i].msg_len, false, &parsed_);
      records_ += r.records;
      malformed_ += r.malformed;
    }
    if (!parsed_.empty() && out.Append(parsed_.data(), parsed_.size()) && !out.Publish()) return false;
    if (got < static_cast<int>(kEventsPerCall)) return true;
  }
}

// ---------------------------------------------------------------- JS thread

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
  // A stopped source's last records are of no use to anyone.
  if (pipe_) pipe_->Stop(false);
  return info.Env().Undefined();
}

Napi::Value Conntrack::SetUpdates(const Napi::CallbackInfo& info) {
  bool on = info.Length() > 0 && info[0].ToBoolean().Value();
  int err = events_.SetUpdates(on);
  if (err) throw WithCode(Napi::Error::New(info.Env(), std::string("conntrack UPDATE group: ") + std::strerror(err)), kErrConntrack, err);
  return info.Env().Undefined();
}

Napi::Value Conntrack::RequestDump(const Napi::CallbackInfo& info) {
  dump_requested_ = true;
  // The reader may be asleep in poll with nothing due: wake it.
  uint64_t one = 1;
  while (write(wake_.get(), &one, sizeof one) < 0 && errno == EINTR) {
  }
  return info.Env().Undefined();
}

}  // namespace scope_tracker
