// SPDX-License-Identifier: Apache-2.0
// scope_tracker.node: eBPF TCP connection tracker for Node.js / Deno (Node-API).
#include <napi.h>

#include "libbpf_log.h"
#include "tracker_wrap.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  scope_tracker::InstallLibbpfLog();  // keep libbpf off stderr; errors quote its log
  exports.Set("Tracker", scope_tracker::Tracker::Init(env));
  exports.Set("recordSize", Napi::Number::New(env, 80));
  return exports;
}

}  // namespace

NODE_API_MODULE(scope_tracker, Init)
