// SPDX-License-Identifier: Apache-2.0
// JS class `Conntrack`: a BatchSource on the shared BatchPipe (thread -> bounded queue -> JS
// batches) that reads ctnetlink: a dump at start and after every ENOBUFS, then NEW and DESTROY
// events (and, when asked, UPDATEs that end a connection), as CtRecords. When JS stalls, the pipe's queue fills, the producer
// stops reading, the kernel's socket buffer fills and the kernel drops events: counted (ENOBUFS)
// and healed by a fresh dump.
#pragma once

#include <napi.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "batch_pipe.h"
#include "conntrack_netlink.h"

namespace scope_tracker {

class Conntrack : public Napi::ObjectWrap<Conntrack>, private BatchSource {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Conntrack(const Napi::CallbackInfo& info);
  ~Conntrack() override;

 private:
  Napi::Value Counters(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value RequestDump(const Napi::CallbackInfo& info);
  Napi::Value SetUpdates(const Napi::CallbackInfo& info);

  // BatchSource (producer thread)
  void Produce(BatchProducer& out) override;
  bool Dump(BatchProducer& out);         // false: return from Produce
  bool DrainEvents(BatchProducer& out);  // false: return from Produce
  static void Marker(BatchProducer& out, CtRecordKind kind, uint32_t count);

  std::chrono::milliseconds interval_{20};
  CtSocket events_;
  CtSocket dump_;
  std::unique_ptr<BatchPipe> pipe_;
  UniqueFd wake_;  // eventfd: RequestDump wakes a reader asleep in poll

  // Written by the producer thread, read by JS at any time.
  std::atomic<uint64_t> enobufs_{0};
  std::atomic<uint64_t> dumps_{0};
  std::atomic<uint64_t> malformed_{0};
  std::atomic<uint64_t> records_{0};
  std::atomic<bool> dump_requested_{true};

  // Producer thread only.
  std::vector<uint8_t> rx_;
  std::vector<uint8_t> parsed_;
  std::chrono::steady_clock::time_point next_dump_allowed_{};
};

}  // namespace scope_tracker
