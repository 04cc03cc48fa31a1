// SPDX-License-Identifier: Apache-2.0
#include "snapshot_wrap.h"
#include "js_errors.h"

#include <cerrno>
#include <cstdint>
#include <string>

namespace scope_tracker {
Napi::Function SocketSnapshot::Init(Napi::Env env) {
  return DefineClass(env, "SocketSnapshot",
                     {
                         InstanceMethod<&SocketSnapshot::Read>("read"),
                         InstanceMethod<&SocketSnapshot::Close>("close"),
                         InstanceMethod<&SocketSnapshot::ReleaseBatch>("release"),
                     });
}

SocketSnapshot::SocketSnapshot(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SocketSnapshot>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    throw WithCode(Napi::TypeError::New(env, "new SocketSnapshot(options): options must be an object"), "ERR_INVALID_ARG_TYPE");
  }
  Napi::Object options = info[0].As<Napi::Object>();
  Napi::Value path = options.Get("objectPath");
  if (!path.IsString() || path.As<Napi::String>().Utf8Value().empty()) {
    throw WithCode(Napi::TypeError::New(env, "options.objectPath must be a non-empty string"), "ERR_INVALID_ARG_TYPE");
  }
  Napi::Value probe_reads = options.Get("probeReads");
  if (!probe_reads.IsUndefined() && !probe_reads.IsBoolean()) {
    throw WithCode(Napi::TypeError::New(env, "options.probeReads must be a boolean"), "ERR_INVALID_ARG_TYPE");
  }
  try {
    session_ = SnapshotSession::Open(path.As<Napi::String>().Utf8Value(), probe_reads.ToBoolean().Value());
  } catch (const BpfError& e) {
    throw WithCode(Napi::Error::New(env, e.what()), e.code());
  }
}

SocketSnapshot::~SocketSnapshot() {
  if (pipe_) pipe_->Stop(false);
  if (retired_pipe_) retired_pipe_->Stop(false);
}

void SocketSnapshot::Run::Produce(BatchProducer& out) {
  constexpr size_t kSize = sizeof(tracker_socket);
  SocketFold fold(session_->last_records());
  bool open = true;
  try {
    // Batches go out while the kernel walks on: JavaScript decodes one as the next is read.
    session_->Read([&](const uint8_t* records, size_t bytes) {
      for (size_t o = 0; o < bytes; o += kSize) {
        if (fold.Take(records + o) && out.Append(records + o, kSize) && !(open = out.Publish())) return false;
      }
      return !out.stopping();
    });
  } catch (const BpfError& e) {
    out.Fail(EIO, e.what());
    return;
  }
  if (!open || out.stopping()) return;
  std::vector<uint8_t> queued = fold.TakeQueued();
  if (!queued.empty()) out.Append(queued.data(), queued.size());
}

void SocketSnapshot::Retire() {
  if (pipe_) pipe_->Stop(false);
  retired_pipe_ = std::move(pipe_);
  retired_run_ = std::move(run_);
}

Napi::Value SocketSnapshot::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!session_) throw WithCode(Napi::Error::New(env, "SocketSnapshot is closed"), "ERR_SNAPSHOT_CLOSED");
  if (info.Length() < 3 || !info[0].IsFunction() || !info[1].IsFunction() || !info[2].IsFunction()) {
    throw WithCode(Napi::TypeError::New(env, "read(onBatch, onError, onEnd): three functions"), "ERR_INVALID_ARG_TYPE");
  }
  if (pipe_ && pipe_->running()) {
    throw WithCode(Napi::Error::New(env, "a snapshot is already being read"), "ERR_SNAPSHOT_BUSY");
  }
  Retire();
  BatchPipeOptions options;
  // ~3,000 records a batch: a batch is ~1 ms of decoding. The queue holds a whole 200k-socket
  // snapshot, so a busy event loop never holds the kernel's walk up.
  options.max_batch_bytes = 256 * 1024;
  options.max_queued_batches = 128;
  options.min_reserve_bytes = 256 * 1024;
  options.error_code = kErrIterRead;
  options.thread_name = "scope-snapshot";
  // The walk takes a core for ~150 ms at 200k sockets; on a small host the JS thread then waited
  // for a CPU (~30 ms in all per snapshot on 2 cores) and its event loop stalled with it.
  options.nice = 10;
  options.resource_name = "scope_tracker.SocketSnapshot";
  run_ = std::make_unique<Run>(session_.get());
  try {
    pipe_ = std::make_unique<BatchPipe>(env, run_.get(), options);
    pipe_->Start(Value(), info[0].As<Napi::Function>(), info[1].As<Napi::Function>(), info[2].As<Napi::Function>());
  } catch (const std::exception& e) {
    pipe_.reset();
    run_.reset();
    throw WithCode(Napi::Error::New(env, std::string("cannot start the snapshot reader: ") + e.what()), kErrIterRead);
  }
  return env.Undefined();
}

Napi::Value SocketSnapshot::ReleaseBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Napi::Boolean::New(env, info.Length() >= 1 && BatchPipe::Release(env, info[0]));
}

Napi::Value SocketSnapshot::Close(const Napi::CallbackInfo& info) {
  // Stopped, not freed: close() too may run inside a pipe's callback. The destructor frees them.
  Retire();
  if (retired_pipe_) retired_pipe_->Stop(false);
  session_.reset();
  return info.Env().Undefined();
}

}  // namespace scope_tracker
