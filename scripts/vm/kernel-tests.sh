#!/bin/sh
# The guest's command for the matrix: the tracker's real-kernel tests under node-tap, one file at a
# time (TCG gives the guest about one core), raw TAP on stdout, exit status tap's.
# Nothing is built here: build/ and node_modules are the host's.
# The list is the tests the matrix has been run with on every kernel of scripts/vm/kernels, and the
# guest-only tests (test/vm/*.guest.ts: what only a guest can show, e.g. a kernel without conntrack;
# the host's `npm test` does not run them). The conntrack tests stay on the host: the guests boot
# without the kernel's modules, so they have no nf_conntrack (which is what no-conntrack.guest.ts tests).
export CI=1 KERNEL_TEST_TIME_SCALE=${KERNEL_TEST_TIME_SCALE:-8} KERNEL_TEST_EMULATION=tcg
uname -r
exec npx tap -R tap --jobs=1 --timeout=2400 \
  test/kernel/ebpf-tracker.test.ts test/kernel/native-lifecycle.test.ts test/kernel/supervisor.test.ts \
  test/kernel/open-states.test.ts test/kernel/reset-race.test.ts test/kernel/scan-failure.test.ts \
  test/kernel/snapshot.test.ts test/kernel/snapshot-supervisor.test.ts \
  test/vm/no-conntrack.guest.ts
