// SPDX-License-Identifier: Apache-2.0
// The addon's JS errors: every one carries a stable `code` (and `errno` where a system call failed),
// so that JavaScript branches on codes, never on messages.
#pragma once

#include <napi.h>

#include <string>

namespace scope_tracker {

inline Napi::Error WithCode(Napi::Error err, const std::string& code, int errnum = 0) {
  err.Set("code", Napi::String::New(err.Env(), code));
  if (errnum) err.Set("errno", Napi::Number::New(err.Env(), errnum));
  return err;
}

[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& message) {
  throw WithCode(Napi::TypeError::New(env, message), "ERR_INVALID_ARG_TYPE");
}

[[noreturn]] inline void ThrowRange(Napi::Env env, const std::string& message) {
  throw WithCode(Napi::RangeError::New(env, message), "ERR_OUT_OF_RANGE");
}

}  // namespace scope_tracker
