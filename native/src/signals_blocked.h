// SPDX-License-Identifier: Apache-2.0
// Every blockable signal held off the calling thread while this lives; the previous mask, and so
// whatever arrived meanwhile, comes back at its end.
//
// Why: the kernel's verifier gives up a BPF_PROG_LOAD with EAGAIN as soon as a signal is pending
// on the loading thread, and libbpf retries five times. A thread signalled faster than a program
// verifies (a V8 CPU profiler's SIGPROF every 100 µs-1 ms on the JS thread) never loads at all.
#pragma once

#include <pthread.h>
#include <signal.h>

namespace scope_tracker {

class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    blocked_ = pthread_sigmask(SIG_BLOCK, &all, &previous_) == 0;
  }
  ~SignalsBlocked() {
    if (blocked_) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t previous_;
  bool blocked_ = false;
};

}  // namespace scope_tracker
