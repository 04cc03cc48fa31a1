// SPDX-License-Identifier: Apache-2.0
// BatchPipe: the one path by which a native source hands bytes to JavaScript.
//
// A source (the ring-buffer reader, a conntrack netlink reader, a BPF-iterator snapshot) runs a
// producer thread that appends records to batches; the pipe queues whole batches (bounded), rings
// the JS thread through one thread-safe function used only as a doorbell (at most one call
// pending, so its own queue never grows), and there hands every queued batch to onBatch as a
// zero-copy Buffer whose memory is reported to V8 as external memory.
//
// Threads and who calls what:
//
//   JS thread      BatchPipe(env, source, options)   nothing runs yet; stop_fd() exists
//                  Start(owner, onBatch, onError, onEnd)   creates the doorbell, starts the
//                                          producer thread, holds the owner's JS object alive
//                                          until the pipe is stopped and the doorbell released
//                  Stop(deliver)           stop(): joins the producer; with deliver, hands what is
//                                          queued to onBatch (then onEnd if the source had ended)
//                                          before returning; idempotent
//                  Ref() / Unref()         whether a running pipe holds the event loop open
//                  Release(batch)          (static) frees a delivered batch before it is collected
//                  running()               true from Start until stopped, failed or ended
//
//   producer       BatchSource::Produce(BatchProducer&) runs on the pipe's thread (signals
//   thread                                 blocked, thread named Options::thread_name) and uses:
//                  Append / Claim+Commit   bytes into the current batch; true means "full: Publish"
//                  Publish()               current batch into the queue, waits while the queue is
//                                          full (that is the back-pressure: a stalled JS thread
//                                          stops the producer, and the source counts its own
//                                          losses, e.g. a kernel ring or socket that overflows)
//                  stopping(), WaitUntil(), stop_fd()   how a producer notices Stop()
//                  Fail(err, context)      the source is broken: what was appended still goes
//                                          out, then onError(Error{code: Options::error_code})
//                  return from Produce     the stream ended: the current batch goes out, then onEnd
//
//   JS callbacks   onBatch(Buffer)         every batch, in order, whole records only (a producer
//                                          that appends whole records and publishes when Append
//                                          says full never splits one)
//                  onError(Error)          at most once, after the batches read before the failure;
//                                          the pipe is stopped (and joined) before it is called.
//                                          A failure Stop() overtakes is not reported.
//                  onEnd()                 at most once, after the last batch, when Produce
//                                          returned on its own (not for Stop(), Fail or teardown);
//                                          the pipe is stopped before it is called. Optional.
//   An exception thrown by a callback does not stop delivery of the rest; the first one is
//   rethrown afterwards (to the caller of Stop(), else as an uncaught exception).
//
// Teardown: when the JS environment goes away with the pipe running, its cleanup hook stops the
// pipe without delivering (the source's BeforeStop/AfterJoin still run), and a doorbell that
// outlives the pipe finds nothing. The owner calls Stop(false) first thing in its destructor, so
// that the producer is joined while everything Produce uses still exists.
#pragma once

#include <napi.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "unique_fd.h"

namespace scope_tracker {

class BatchPipe;
class BatchProducer;

// Implemented by each native source; the pipe calls it, the source owns the pipe.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Producer thread. Returns when done (end of stream), after Fail(), when stopping() (after a
  // final read, if the source wants one), or when Publish() returned false.
  virtual void Produce(BatchProducer& out) = 0;
  // JS thread (or env teardown), inside Stop, before the producer is told to stop: e.g. detach the
  // programs so that the producer's final read sees every event there will be.
  virtual void BeforeStop() {}
  // JS thread (or env teardown), inside Stop, after the producer thread was joined: read final
  // figures, free what only Produce used.
  virtual void AfterJoin() {}
};

struct BatchPipeOptions {
  // A batch counts as full once it holds at least this many bytes; Append says so.
  size_t max_batch_bytes = 256 * 1024;
  // Batches queued for JS; Publish waits while this many are (except while stopping).
  size_t max_queued_batches = 64;
  // First allocation of a batch (later ones follow what the previous batch needed).
  size_t min_reserve_bytes = 4096;
  // err.code of the Error given to onError, e.g. "ERR_BPF_RING_BUFFER".
  std::string error_code = "ERR_NATIVE_SOURCE";
  std::string thread_name = "scope-pipe";  // at most 15 characters (pthread_setname_np)
  // Added to the producer thread's nice value (Linux: per thread; raising needs no privilege).
  // A source whose work may wait (a snapshot: its kernel walk runs on this thread) yields the
  // cores to the JS thread; one that must keep up with the kernel (a ring buffer) keeps 0.
  int nice = 0;
  std::string resource_name = "scope_tracker.BatchPipe";  // async resource name of the doorbell
};

// The producer thread's side of the pipe. Only the producer thread may call it.
class BatchProducer {
 public:
  // Copies size bytes to the current batch. True when the batch is now full: Publish() it.
  bool Append(const void* data, size_t size);
  // Room for up to max bytes at the end of the current batch (e.g. to read() into); then
  // Commit(used) keeps the first used of them. True when the batch is now full.
  uint8_t* Claim(size_t max);
  bool Commit(size_t used);
  // Bytes in the current, unpublished batch.
  size_t pending_bytes() const { return current_ ? current_->size() : 0; }

  // Queues the current batch (if any) and rings the JS thread. Waits while the queue is full,
  // unless stopping: then it queues anyway and Stop() delivers (or frees) it. False only when the
  // JS environment is going away: nothing will be delivered, return from Produce.
  bool Publish();
  // Stop() was called (or the environment is going away).
  bool stopping() const;
  // Sleeps until the deadline or Stop(). Returns stopping().
  bool WaitUntil(std::chrono::steady_clock::time_point deadline);
  // An eventfd that turns readable at Stop(), for producers blocked in poll/epoll. Never read it.
  int stop_fd() const;
  // The source failed with errno err: publishes the current batch, then onError gets
  // Error("<context>: <strerror(err)>", code Options::error_code). Return from Produce next.
  void Fail(int err, const std::string& context);

 private:
  friend class BatchPipe;
  explicit BatchProducer(BatchPipe* pipe) : pipe_(pipe) {}
  std::vector<uint8_t>& Current();

  BatchPipe* pipe_;
  std::unique_ptr<std::vector<uint8_t>> current_;
  size_t next_reserve_ = 0;
  size_t claim_base_ = 0;  // size of the current batch before the last Claim
};

class BatchPipe {
 public:
  // JS thread. Creates the stop eventfd (throws std::system_error); starts nothing.
  BatchPipe(Napi::Env env, BatchSource* source, const BatchPipeOptions& options);
  ~BatchPipe();
  BatchPipe(const BatchPipe&) = delete;
  BatchPipe& operator=(const BatchPipe&) = delete;

  // Any thread: the eventfd that turns readable at Stop() (e.g. to add to an epoll set before
  // Start). Closed by Stop() once the producer was joined.
  int stop_fd() const { return stop_fd_.get(); }
  // JS thread, once. on_end may be empty (a continuous source). owner: the source's JS object,
  // kept alive while the pipe runs. Throws std::runtime_error/std::system_error when the doorbell
  // or the thread cannot be created (the source turns that into its own coded JS error).
  void Start(Napi::Object owner, Napi::Function on_batch, Napi::Function on_error, Napi::Function on_end);
  // JS thread. See the header comment. Throws the first exception a callback threw.
  void Stop(bool deliver);
  void Ref();
  void Unref();
  bool running() const { return running_; }
  // JS thread. Frees a batch onBatch was given, now, instead of when it is collected: the consumer
  // is done with it, and its bytes read as empty from then on (the ArrayBuffer is detached).
  // False, and nothing done, for anything else (a batch already released or freed, a view into
  // one, any other array), so a caller's mistake cannot free what it does not own.
  static bool Release(Napi::Env env, Napi::Value value);

 private:
  using Batch = std::vector<uint8_t>;
  friend class BatchProducer;

  // Bridges the doorbell (which may outlive the pipe during env teardown) to us.
  struct Link {
    BatchPipe* pipe;
  };

  // Producer thread
  void Run();
  bool Push(std::unique_ptr<Batch> batch);
  bool NeedRingLocked();
  bool PostRing();
  bool closing() const;
  void SetError(int err, const std::string& context);

  // JS thread
  static void CallJs(napi_env env, napi_value js_cb, void* context, void* data);
  static void TsfnFinalize(napi_env env, void* data, void* hint);
  static void EnvCleanup(void* arg);
  void DeliverFromQueue(Napi::Env env);
  void Shutdown(napi_env env, bool deliver);
  void DeliverBatch(Napi::Env env, std::unique_ptr<Batch> batch);

  // Set at construction (the callbacks at Start), read-only afterwards.
  napi_env env_;
  BatchSource* source_;
  BatchPipeOptions options_;
  Napi::FunctionReference on_batch_;
  Napi::FunctionReference on_error_;
  Napi::FunctionReference on_end_;
  UniqueFd stop_fd_;
  BatchProducer producer_{this};  // producer thread only

  // JS thread only.
  bool running_ = false;
  bool cleanup_hook_ = false;
  bool started_ = false;
  bool final_reported_ = false;  // onError or onEnd called (or superseded by Stop)
  napi_threadsafe_function tsfn_ = nullptr;
  Link* link_ = nullptr;
  Napi::ObjectReference owner_;
  std::thread thread_;

  // Shared between the threads, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable stop_cv_;   // WaitUntil; notified on stop
  std::condition_variable space_cv_;  // Publish waits here while ready_ is full
  bool stopping_ = false;
  bool closing_ = false;       // the doorbell refused a call: the environment is going away
  bool wake_pending_ = false;  // a doorbell call is queued and has not run yet
  bool ended_ = false;         // Produce returned on its own
  int error_ = 0;              // errno given to Fail
  std::string error_context_;
  std::deque<std::unique_ptr<Batch>> ready_;
};

}  // namespace scope_tracker
