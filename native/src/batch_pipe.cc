// SPDX-License-Identifier: Apache-2.0
#include "batch_pipe.h"
#include "js_errors.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <unordered_set>

namespace scope_tracker {

namespace {
// Batches handed to JS and not yet freed, by data pointer. Only the JS thread of an environment
// delivers, releases and finalizes its batches, so one set per thread needs no lock.
thread_local std::unordered_set<const uint8_t*> delivered_batches;
}  // namespace

// ---------------------------------------------------------------- producer thread

std::vector<uint8_t>& BatchProducer::Current() {
  if (!current_) {
    current_ = std::make_unique<std::vector<uint8_t>>();
    current_->reserve(next_reserve_ ? next_reserve_ : pipe_->options_.min_reserve_bytes);
  }
  return *current_;
}

bool BatchProducer::Append(const void* data, size_t size) {
  std::vector<uint8_t>& batch = Current();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  batch.insert(batch.end(), p, p + size);
  return batch.size() >= pipe_->options_.max_batch_bytes;
}

uint8_t* BatchProducer::Claim(size_t max) {
  std::vector<uint8_t>& batch = Current();
  claim_base_ = batch.size();
  batch.resize(claim_base_ + max);
  return batch.data() + claim_base_;
}

bool BatchProducer::Commit(size_t used) {
  std::vector<uint8_t>& batch = Current();
  batch.resize(std::min(batch.size(), claim_base_ + used));
  return batch.size() >= pipe_->options_.max_batch_bytes;
}

bool BatchProducer::Publish() {
  if (!current_ || current_->empty()) return !pipe_->closing();
  size_t used = current_->size();
  // The next batch starts about as big as this one needed, within bounds.
  const BatchPipeOptions& o = pipe_->options_;
  next_reserve_ = std::min(o.max_batch_bytes, std::max(o.min_reserve_bytes, used + used / 4));
  return pipe_->Push(std::move(current_));
}

bool BatchProducer::stopping() const {
  std::lock_guard<std::mutex> lock(pipe_->mu_);
  return pipe_->stopping_ || pipe_->closing_;
}

bool BatchProducer::WaitUntil(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(pipe_->mu_);
  return pipe_->stop_cv_.wait_until(lock, deadline, [this] { return pipe_->stopping_ || pipe_->closing_; });
}

int BatchProducer::stop_fd() const { return pipe_->stop_fd(); }

void BatchProducer::Fail(int err, const std::string& context) {
  Publish();  // records read before the failure still go out first
  pipe_->SetError(err, context);
}

void BatchPipe::Run() {
  // Signals belong to the JS thread.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  pthread_setname_np(pthread_self(), options_.thread_name.c_str());
  if (options_.nice > 0) {
    const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
    errno = 0;
    const int current = getpriority(PRIO_PROCESS, tid);
    // Best effort: a thread left at the JS thread's priority still works, only less politely.
    if (errno == 0) setpriority(PRIO_PROCESS, tid, std::min(current + options_.nice, 19));
  }

  source_->Produce(producer_);
  producer_.Publish();  // whatever the source appended last

  bool ring = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Returning on its own is the end of the stream; after Stop, Fail or teardown it is not.
    if (!stopping_ && !closing_ && error_ == 0) {
      ended_ = true;
      ring = NeedRingLocked();
    }
  }
  if (ring) PostRing();
}

bool BatchPipe::closing() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closing_;
}

// Queues a batch, waiting for room unless stopping, and rings the JS thread. Returns false when
// the doorbell is closing (environment shutting down).
bool BatchPipe::Push(std::unique_ptr<Batch> batch) {
  bool ring;
  {
    std::unique_lock<std::mutex> lock(mu_);
    space_cv_.wait(lock, [this] { return ready_.size() < options_.max_queued_batches || stopping_ || closing_; });
    if (closing_) return false;
    ready_.push_back(std::move(batch));
    ring = NeedRingLocked();
  }
  return ring ? PostRing() : true;
}

// Called with mu_ held. While stopping nobody rings: Shutdown delivers ready_ itself after the
// join. Otherwise one doorbell call at a time: the one pending takes everything queued so far.
bool BatchPipe::NeedRingLocked() {
  if (stopping_ || closing_ || wake_pending_) return false;
  wake_pending_ = true;
  return true;
}

bool BatchPipe::PostRing() {
  napi_status status = napi_call_threadsafe_function(tsfn_, nullptr, napi_tsfn_nonblocking);
  if (status == napi_ok) return true;
  std::lock_guard<std::mutex> lock(mu_);
  wake_pending_ = false;
  closing_ = true;  // napi_closing: the environment is going away; Shutdown will join us
  return false;
}

void BatchPipe::SetError(int err, const std::string& context) {
  bool ring;
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = err ? err : EIO;
    error_context_ = context;
    ring = NeedRingLocked();
  }
  if (ring) PostRing();
}

// ---------------------------------------------------------------- JS thread

BatchPipe::BatchPipe(Napi::Env env, BatchSource* source, const BatchPipeOptions& options)
    : env_(env), source_(source), options_(options) {
  options_.max_batch_bytes = std::max<size_t>(options_.max_batch_bytes, 1);
  options_.max_queued_batches = std::max<size_t>(options_.max_queued_batches, 1);
  stop_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (stop_fd_.get() < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

BatchPipe::~BatchPipe() {
  Shutdown(env_, false);
  if (link_) link_->pipe = nullptr;
}

void BatchPipe::Start(Napi::Object owner, Napi::Function on_batch, Napi::Function on_error, Napi::Function on_end) {
  if (started_) throw std::logic_error("BatchPipe::Start called twice");
  started_ = true;
  on_batch_ = Napi::Persistent(on_batch);
  on_error_ = Napi::Persistent(on_error);
  if (!on_end.IsEmpty()) on_end_ = Napi::Persistent(on_end);

  // The TSFN is only a doorbell: batches travel through ready_ (bounded), so its own queue is
  // unbounded but holds at most one pending call (wake_pending_).
  link_ = new Link{this};
  napi_status status = napi_create_threadsafe_function(
      env_, on_batch, nullptr, Napi::String::New(env_, options_.resource_name), 0, 1, link_,
      &BatchPipe::TsfnFinalize, link_, &BatchPipe::CallJs, &tsfn_);
  if (status != napi_ok) {
    delete link_;
    link_ = nullptr;
    tsfn_ = nullptr;
    throw std::runtime_error("napi_create_threadsafe_function failed");
  }

  try {
    thread_ = std::thread(&BatchPipe::Run, this);
  } catch (const std::system_error& e) {
    link_->pipe = nullptr;  // TsfnFinalize frees the link and finds nobody
    link_ = nullptr;
    napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
    tsfn_ = nullptr;
    throw std::runtime_error(std::string("cannot start the producer thread: ") + e.what());
  }
  running_ = true;
  napi_add_env_cleanup_hook(env_, &BatchPipe::EnvCleanup, this);
  cleanup_hook_ = true;
  // A running source stays alive (like a server) until stopped; released in TsfnFinalize.
  owner_ = Napi::Persistent(owner);
}

void BatchPipe::CallJs(napi_env env, napi_value /*js_cb*/, void* context, void* /*data*/) {
  Link* link = static_cast<Link*>(context);
  if (env == nullptr || link == nullptr || link->pipe == nullptr) return;
  Napi::Env e(env);
  try {
    link->pipe->DeliverFromQueue(e);
  } catch (const Napi::Error& err) {
    err.ThrowAsJavaScriptException();  // surfaces as an uncaught exception
  } catch (const std::exception& err) {
    Napi::Error::New(e, err.what()).ThrowAsJavaScriptException();
  }
}

void BatchPipe::TsfnFinalize(napi_env /*env*/, void* data, void* /*hint*/) {
  Link* link = static_cast<Link*>(data);
  BatchPipe* self = link->pipe;
  delete link;
  if (!self) return;
  self->link_ = nullptr;
  self->tsfn_ = nullptr;
  self->owner_.Reset();  // stopped and drained: the owner may now be collected
}

void BatchPipe::EnvCleanup(void* arg) {
  BatchPipe* self = static_cast<BatchPipe*>(arg);
  self->cleanup_hook_ = false;  // being run, hence removed
  self->Shutdown(nullptr, false);
}

void BatchPipe::DeliverFromQueue(Napi::Env env) {
  if (!running_) return;  // Shutdown already delivered what was left
  std::deque<std::unique_ptr<Batch>> batches;
  int err;
  bool ended;
  std::string context;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_pending_ = false;
    batches.swap(ready_);
    err = error_;
    ended = ended_;
    context = error_context_;
  }
  space_cv_.notify_all();

  std::unique_ptr<Napi::Error> first;
  for (auto& batch : batches) {
    try {
      DeliverBatch(env, std::move(batch));
    } catch (const Napi::Error& e) {
      if (!first) first = std::make_unique<Napi::Error>(e);
    }
  }
  if ((err || ended) && !final_reported_) {
    final_reported_ = true;
    try {
      Shutdown(env, true);  // the producer has returned: join it, release the doorbell
    } catch (const Napi::Error& e) {
      if (!first) first = std::make_unique<Napi::Error>(e);
    }
    try {
      if (err) {
        Napi::Error error =
            WithCode(Napi::Error::New(env, context + ": " + std::strerror(err)), options_.error_code);
        on_error_.Call({error.Value()});
      } else if (!on_end_.IsEmpty()) {
        on_end_.Call({});
      }
    } catch (const Napi::Error& e) {
      if (!first) first = std::make_unique<Napi::Error>(e);
    }
  }
  if (first) throw *first;
}

void BatchPipe::DeliverBatch(Napi::Env env, std::unique_ptr<Batch> batch) {
  if (!batch || batch->empty()) return;
  Batch* raw = batch.release();
  int64_t external = static_cast<int64_t>(raw->capacity());
  // Zero copy: the Buffer owns the vector and frees it when collected, or when Release detaches it.
  Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::New(
      env, raw->data(), raw->size(),
      [](Napi::Env fin_env, uint8_t*, Batch* hint) {
        delivered_batches.erase(hint->data());
        Napi::MemoryManagement::AdjustExternalMemory(fin_env, -static_cast<int64_t>(hint->capacity()));
        delete hint;
      },
      raw);
  delivered_batches.insert(raw->data());
  Napi::MemoryManagement::AdjustExternalMemory(env, external);
  on_batch_.Call({buffer});
}

bool BatchPipe::Release(Napi::Env env, Napi::Value value) {
  if (!value.IsTypedArray()) return false;
  Napi::TypedArray view = value.As<Napi::TypedArray>();
  if (view.TypedArrayType() != napi_uint8_array || view.ByteOffset() != 0) return false;
  Napi::ArrayBuffer buffer = view.ArrayBuffer();
  const uint8_t* data = static_cast<const uint8_t*>(buffer.Data());
  if (data == nullptr || delivered_batches.count(data) == 0) return false;
  delivered_batches.erase(data);
  // Detaching drops the ArrayBuffer's hold on the vector: the finalizer runs without a collection.
  napi_status status = napi_detach_arraybuffer(env, buffer);
  if (status != napi_ok) {
    delivered_batches.insert(data);
    return false;
  }
  return true;
}

void BatchPipe::Stop(bool deliver) { Shutdown(env_, deliver); }

void BatchPipe::Shutdown(napi_env env, bool deliver) {
  if (!running_) return;
  running_ = false;

  source_->BeforeStop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  space_cv_.notify_all();
  uint64_t one = 1;
  ssize_t ignored = write(stop_fd_.get(), &one, sizeof(one));
  (void)ignored;
  if (thread_.joinable()) thread_.join();
  source_->AfterJoin();
  stop_fd_.Reset();

  if (cleanup_hook_ && env) napi_remove_env_cleanup_hook(env, &BatchPipe::EnvCleanup, this);
  cleanup_hook_ = false;

  std::deque<std::unique_ptr<Batch>> batches;
  bool ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batches.swap(ready_);
    ended = ended_;
  }
  producer_.current_.reset();

  if (tsfn_) {
    // Pending doorbells still run (and find nothing); then TsfnFinalize releases the owner.
    napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
  }

  if (!deliver || !env) return;
  Napi::Env e(env);
  std::unique_ptr<Napi::Error> first;
  for (auto& batch : batches) {
    try {
      DeliverBatch(e, std::move(batch));
    } catch (const Napi::Error& err) {
      if (!first) first = std::make_unique<Napi::Error>(err);
    }
  }
  // A stream that had ended before Stop still says so, after its last batch; a failure Stop
  // overtook is not reported (the caller is stopping anyway).
  if (ended && !final_reported_) {
    final_reported_ = true;
    if (!on_end_.IsEmpty()) {
      try {
        on_end_.Call({});
      } catch (const Napi::Error& err) {
        if (!first) first = std::make_unique<Napi::Error>(err);
      }
    }
  }
  final_reported_ = true;
  if (first) throw *first;
}

void BatchPipe::Ref() {
  if (running_ && tsfn_) napi_ref_threadsafe_function(env_, tsfn_);
}

void BatchPipe::Unref() {
  if (running_ && tsfn_) napi_unref_threadsafe_function(env_, tsfn_);
}

}  // namespace scope_tracker
