#!/bin/sh
# The guest's command for the matrix: the real-kernel tests (test/kernel/*.test.ts) under node-tap,
# one file at a time (TCG gives the guest about one core), raw TAP on stdout, exit status tap's.
# Nothing is built here: build/ and node_modules are the host's.
export CI=1 KERNEL_TEST_TIME_SCALE=${KERNEL_TEST_TIME_SCALE:-8} KERNEL_TEST_EMULATION=tcg
uname -r
exec npx tap -R tap --jobs=1 --timeout=2400 test/kernel/*.test.ts
