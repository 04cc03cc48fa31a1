// SPDX-License-Identifier: Apache-2.0
// JS class `Tracker`: owns a BpfSession and the producer on a BatchPipe that drains the
// session's ring buffer into batches of whole records.
#pragma once

#include <napi.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "batch_pipe.h"
#include "bpf_session.h"
#include "unique_fd.h"

struct ring_buffer;

namespace scope_tracker {

class Tracker : public Napi::ObjectWrap<Tracker>, private BatchSource {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Tracker(const Napi::CallbackInfo& info);
  ~Tracker() override;

 private:
  struct RingBufferDeleter {
    void operator()(ring_buffer* rb) const;
  };

  // JS methods
  Napi::Value Counters(const Napi::CallbackInfo& info);
  Napi::Value AttachedPrograms(const Napi::CallbackInfo& info);
  Napi::Value Attachments(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value RefLoop(const Napi::CallbackInfo& info);
  Napi::Value UnrefLoop(const Napi::CallbackInfo& info);

  // BatchSource: the pipe's producer thread runs Produce; the hooks run inside its Stop.
  void Produce(BatchProducer& out) override;
  void BeforeStop() override;
  void AfterJoin() override;

  // Producer thread
  static int OnRecord(void* ctx, void* data, size_t size);
  int ConsumeAll(size_t* consumed);

  Napi::Object CountersObject(Napi::Env env, const scope_tracker::Counters& c);
  bool running() const { return pipe_ && pipe_->running(); }

  // Set at construction, read-only afterwards.
  bool wakeup_ = false;
  std::chrono::milliseconds interval_{20};
  std::unique_ptr<BpfSession> bpf_;
  std::unique_ptr<ring_buffer, RingBufferDeleter> rb_;
  UniqueFd epoll_fd_;  // ring buffer epoll fd + the pipe's stop fd: wakeup mode, and timer mode when idle

  // JS thread only.
  scope_tracker::Counters final_counters_{};

  // Written by the producer thread, read by counters().
  std::atomic<uint64_t> bad_size_records_{0};  // ring records not sizeof(struct tracker_event): dropped

  // Producer thread only.
  BatchProducer* out_ = nullptr;
  bool batch_full_ = false;

  // Last: destroyed first, after ~Tracker has stopped it.
  std::unique_ptr<BatchPipe> pipe_;
};

}  // namespace scope_tracker
