// SPDX-License-Identifier: Apache-2.0
// JS class `Tracker`: owns a BpfSession, a consumer thread that drains the ring
// buffer into batches, and the thread-safe function that hands batches to JS.
#pragma once

#include <napi.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bpf_session.h"

struct ring_buffer;

namespace scope_tracker {

class Tracker : public Napi::ObjectWrap<Tracker> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Tracker(const Napi::CallbackInfo& info);
  ~Tracker() override;

 private:
  using Batch = std::vector<uint8_t>;

  // Bridges the TSFN (which may outlive this object during env teardown) to us.
  struct Link {
    Tracker* tracker;
  };
  struct RingBufferDeleter {
    void operator()(ring_buffer* rb) const;
  };
  class Fd {
   public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() { Reset(); }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    void Reset(int fd = -1);

   private:
    int fd_ = -1;
  };

  // JS methods
  Napi::Value Counters(const Napi::CallbackInfo& info);
  Napi::Value AttachedPrograms(const Napi::CallbackInfo& info);
  Napi::Value Attachments(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value RefLoop(const Napi::CallbackInfo& info);
  Napi::Value UnrefLoop(const Napi::CallbackInfo& info);

  // Consumer thread
  void Run();
  static int OnRecord(void* ctx, void* data, size_t size);
  int ConsumeAll(bool final);
  bool Publish(bool final);
  void Fail(int err);
  bool PostWake();

  // JS thread
  static void CallJs(napi_env env, napi_value js_cb, void* context, void* data);
  static void TsfnFinalize(napi_env env, void* data, void* hint);
  static void EnvCleanup(void* arg);
  void DeliverFromQueue(Napi::Env env);
  // Stops everything; when deliver is true, hands the remaining batches to onBatch
  // synchronously (returns the first exception onBatch threw, if any).
  void Shutdown(napi_env env, bool deliver);
  void DeliverBatch(Napi::Env env, std::unique_ptr<Batch> batch);
  Napi::Object CountersObject(Napi::Env env, const scope_tracker::Counters& c);

  // Set at construction, read-only afterwards.
  bool wakeup_ = false;
  std::chrono::milliseconds interval_{20};
  std::unique_ptr<BpfSession> bpf_;
  std::unique_ptr<ring_buffer, RingBufferDeleter> rb_;
  Fd epoll_fd_;   // wakeup mode: ring buffer epoll fd + stop_fd_
  Fd stop_fd_;    // eventfd written by Shutdown to interrupt epoll_wait
  Napi::FunctionReference on_batch_;
  Napi::FunctionReference on_error_;

  // JS thread only.
  bool running_ = false;
  bool cleanup_hook_ = false;
  bool error_reported_ = false;
  napi_threadsafe_function tsfn_ = nullptr;
  Link* link_ = nullptr;
  scope_tracker::Counters final_counters_{};
  std::thread thread_;

  // Shared between the threads, guarded by mu_.
  std::mutex mu_;
  std::condition_variable wake_cv_;   // consumer's drain timer; notified on stop
  std::condition_variable space_cv_;  // consumer waits here while ready_ is full
  bool stopping_ = false;
  bool wake_pending_ = false;
  int consumer_error_ = 0;  // errno of a ring buffer failure
  std::deque<std::unique_ptr<Batch>> ready_;

  // Consumer thread only.
  std::unique_ptr<Batch> current_;
  bool batch_full_ = false;
  size_t next_reserve_ = 0;
};

}  // namespace scope_tracker
