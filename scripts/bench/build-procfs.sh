#!/usr/bin/env bash
# Build the procfs benchmark helpers into build/bench/ (or OUT_DIR):
#   conn-holder   holds established loopback TCP connections (both ends)
#   procfs-floor  the C floor for scripts/bench/procfs-scan.ts
# Usage: scripts/bench/build-procfs.sh [OUT_DIR]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/scripts/bench"
OUT="${1:-$ROOT/build/bench}"
CC="${CC:-cc}"

command -v "$CC" >/dev/null 2>&1 || { echo "bench/build-procfs: C compiler '$CC' not found" >&2; exit 1; }
mkdir -p "$OUT"
CFLAGS=(-O2 -g -Wall -Wextra -Werror -std=gnu11)
"$CC" "${CFLAGS[@]}" -o "$OUT/conn-holder" "$SRC/conn-holder.c"
"$CC" "${CFLAGS[@]}" -o "$OUT/procfs-floor" "$SRC/procfs-floor.c"
echo "bench/build-procfs: wrote $OUT/conn-holder $OUT/procfs-floor"
