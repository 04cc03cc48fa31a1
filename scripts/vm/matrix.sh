#!/usr/bin/env bash
# Usage: matrix.sh [KERNEL...]   (default: every kernel in scripts/vm/kernels, in file order)
# Runs the real-kernel tests in a VM per kernel, one after another, and stops at the first kernel
# that fails. Prints each kernel's result with the folder of its run (console log, TAP), then
#   vm matrix: N passed, N failed
# (assertion counts from tap's summary, summed over the kernels that ran). Exit 0 only if all passed.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || mapfile -t kernels < <(kernel_names)
passed=0 failed=0 status=0 results=()
for k in "${kernels[@]}"; do
  log=$(mktemp)
  started=$(date +%s)
  bash "$VM_DIR/run.sh" "$k" sh scripts/vm/kernel-tests.sh 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  summary=$(grep -E '^# \{ total: [0-9]+' "$log" | tail -n 1)
  p=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary"); p=${p:-0}
  f=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary"); f=${f:-0}
  skips=$(grep -cE '# SKIP' "$log" || true)
  [ "$skips" -gt 0 ] && { echo "vm: $k: $skips skipped test(s): none allowed"; f=$((f + skips)); }
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  [ -z "$summary" ] && [ "$f" -eq 0 ] && f=1
  console=$(sed -nE 's/.*console log (.*)$/\1/p' "$log" | tail -n 1)
  results+=("vm $k: $p passed, $f failed in $(( $(date +%s) - started ))s; log $console")
  passed=$((passed + p)); failed=$((failed + f))
  rm -f "$log"
  if [ "$f" -ne 0 ]; then status=1; echo "vm: $k failed: stopping the matrix here"; break; fi
done
printf '%s\n' "${results[@]}"
echo "vm matrix: $passed passed, $failed failed"
exit "$status"
