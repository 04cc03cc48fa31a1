#!/bin/sh
# The guest's command for the matrix: the tracker's real-kernel tests under node-tap, one file at a
# time (TCG gives the guest about one core), raw TAP on stdout, exit status tap's.
# Nothing is built here: build/ and node_modules are the host's.
# The list is the tests the matrix has been run with on every kernel of scripts/vm/kernels; the
# other test/kernel files (socket snapshot, conntrack, open states, reset race, scan failure) run
# on the host only until they have been through the matrix (README, Kernel matrix).
export CI=1 KERNEL_TEST_TIME_SCALE=${KERNEL_TEST_TIME_SCALE:-8} KERNEL_TEST_EMULATION=tcg
uname -r
exec npx tap -R tap --jobs=1 --timeout=2400 \
  test/kernel/ebpf-tracker.test.ts test/kernel/native-lifecycle.test.ts test/kernel/supervisor.test.ts
