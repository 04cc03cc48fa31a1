#!/usr/bin/env bash
# Build the C benchmark helpers into build/bench/ (or OUT_DIR):
#   conn-holder   holds established loopback TCP connections (both ends)
#   procfs-floor  the C floor for scripts/bench/procfs-scan.ts
#   page-touch    what this machine charges for touching freshly mapped memory (report-latency.ts)
# Usage: scripts/bench/build-helpers.sh [OUT_DIR]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/scripts/bench"
OUT="${1:-$ROOT/build/bench}"
CC="${CC:-cc}"

command -v "$CC" >/dev/null 2>&1 || { echo "bench/build-helpers: C compiler '$CC' not found" >&2; exit 1; }
mkdir -p "$OUT"
CFLAGS=(-O2 -g -Wall -Wextra -Werror -std=gnu11)
for helper in conn-holder procfs-floor page-touch; do
  "$CC" "${CFLAGS[@]}" -o "$OUT/$helper" "$SRC/$helper.c"
done
echo "bench/build-helpers: wrote $OUT/conn-holder $OUT/procfs-floor $OUT/page-touch"
