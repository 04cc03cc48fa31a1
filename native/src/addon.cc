// SPDX-License-Identifier: Apache-2.0
// scope_tracker.node: eBPF TCP connection tracker for Node.js / Deno (Node-API).
#include <napi.h>
#include <time.h>

#include "conntrack_wrap.h"
#include "fd_walk.h"
#include "libbpf_log.h"
#include "snapshot_wrap.h"
#include "tracker_wrap.h"

namespace {

// The clock bpf_ktime_get_ns() stamps events with. Node's process.hrtime() happens to read it
// too, Deno's counts from process start: the hold-back window must not depend on which runtime.
Napi::Value MonotonicNowNs(const Napi::CallbackInfo& info) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return Napi::Number::New(info.Env(), static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  scope_tracker::InstallLibbpfLog();  // keep libbpf off stderr; errors quote its log
  exports.Set("Tracker", scope_tracker::Tracker::Init(env));
  exports.Set("Conntrack", scope_tracker::Conntrack::Init(env));
  exports.Set("recordSize", Napi::Number::New(env, 80));
  exports.Set("monotonicNowNs", Napi::Function::New(env, MonotonicNowNs, "monotonicNowNs"));
  exports.Set("SocketSnapshot", scope_tracker::SocketSnapshot::Init(env));
  exports.Set("socketInodes", Napi::Function::New(env, scope_tracker::SocketInodes, "socketInodes"));
  return exports;
}

}  // namespace

NODE_API_MODULE(scope_tracker, Init)
