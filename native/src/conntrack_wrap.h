// SPDX-License-Identifier: Apache-2.0
// JS class `Conntrack`: a reader thread on the ctnetlink sockets (a dump at start and after every
// ENOBUFS, then NEW/UPDATE/DESTROY events) that hands batches of CtRecords to JS through a
// bounded queue and a thread-safe function, the same thread -> bounded queue -> JS batch pipe as
// the ring-buffer reader. When JS stalls, the queue fills, the thread stops reading, the kernel's
// socket buffer fills and it drops events: counted (ENOBUFS) and healed by a fresh dump.
#pragma once

#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "conntrack_netlink.h"

namespace scope_tracker {

class Conntrack : public Napi::ObjectWrap<Conntrack> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Conntrack(const Napi::CallbackInfo& info);
  ~Conntrack() override;

 private:
  using Batch = std::vector<uint8_t>;
  struct Link {
    Conntrack* self;
  };

  Napi::Value Counters(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value RequestDump(const Napi::CallbackInfo& info);

  // Reader thread
  void Run();
  bool Dump();          // false on a fatal error (Fail called) or stop
  bool DrainEvents();   // false on a fatal error
  void Marker(CtRecordKind kind, uint32_t count);
  bool Publish();       // false when stopping or the environment is going away
  void Fail(int err, const std::string& what);
  bool Stopping();

  // JS thread
  static void CallJs(napi_env env, napi_value js_cb, void* context, void* data);
  static void TsfnFinalize(napi_env env, void* data, void* hint);
  static void EnvCleanup(void* arg);
  void Deliver(Napi::Env env);
  void DeliverBatch(Napi::Env env, std::unique_ptr<Batch> batch);
  void Shutdown(napi_env env);

  std::chrono::milliseconds interval_{20};
  CtSocket events_;
  CtSocket dump_;
  int stop_fd_ = -1;
  Napi::FunctionReference on_batch_;
  Napi::FunctionReference on_error_;
  napi_threadsafe_function tsfn_ = nullptr;
  Link* link_ = nullptr;
  bool running_ = false;
  bool cleanup_hook_ = false;
  std::thread thread_;

  // Counters, written by the reader thread, read by JS at any time.
  std::atomic<uint64_t> enobufs_{0};
  std::atomic<uint64_t> dumps_{0};
  std::atomic<uint64_t> malformed_{0};
  std::atomic<uint64_t> records_{0};
  std::atomic<bool> dump_requested_{true};

  // Shared, guarded by mu_.
  std::mutex mu_;
  std::condition_variable space_cv_;
  bool stopping_ = false;
  bool wake_pending_ = false;
  int error_ = 0;
  std::string error_what_;
  std::deque<std::unique_ptr<Batch>> ready_;

  // Reader thread only.
  std::unique_ptr<Batch> current_;
  std::vector<uint8_t> rx_;
  std::chrono::steady_clock::time_point last_publish_{};
  std::chrono::steady_clock::time_point next_dump_allowed_{};
};

}  // namespace scope_tracker
