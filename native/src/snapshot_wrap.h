// SPDX-License-Identifier: Apache-2.0
// JS class `SocketSnapshot`: owns a SnapshotSession (the loaded, attached iterator) and, per
// read(), one BatchPipe whose producer thread reads the iterator to EOF, folds shared sockets as
// the records come and hands them to JS in batches while the walk goes on, then ends the stream.
//
//   new SocketSnapshot({ objectPath, probeReads? })   loads and attaches; throws Error{code} (see snapshot_session.h)
//   read(onBatch, onError, onEnd)             one snapshot, off the JS thread; one at a time
//   release(batch)                            frees a batch read() gave, now (BatchPipe::Release); false for anything else
//   close()                                   stops a read in flight (no callbacks), frees the program
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "batch_pipe.h"
#include "snapshot_session.h"

namespace scope_tracker {

class SocketSnapshot : public Napi::ObjectWrap<SocketSnapshot> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit SocketSnapshot(const Napi::CallbackInfo& info);
  ~SocketSnapshot() override;

 private:
  // One snapshot: the pipe's source. Produce runs on the pipe's thread.
  class Run : public BatchSource {
   public:
    explicit Run(const SnapshotSession* session) : session_(session) {}
    void Produce(BatchProducer& out) override;

   private:
    const SnapshotSession* session_;
  };

  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value ReleaseBatch(const Napi::CallbackInfo& info);
  // Stops the current read's pipe and keeps it one more read: read() may be called from inside
  // the previous pipe's onEnd (a promise continuation), and a pipe must not be freed under its
  // own delivery. Frees the one kept before.
  void Retire();

  std::unique_ptr<SnapshotSession> session_;
  std::unique_ptr<Run> run_;
  std::unique_ptr<BatchPipe> pipe_;
  std::unique_ptr<Run> retired_run_;
  std::unique_ptr<BatchPipe> retired_pipe_;
};

}  // namespace scope_tracker
