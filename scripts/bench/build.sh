#!/usr/bin/env bash
# Build the benchmark helpers into build/bench/:
#   floor-consumer  minimal libbpf reader of build/tracker.bpf.o (run scripts/build-bpf.sh first to use it)
#   churn           loopback TCP connect/accept/close generator
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="$ROOT/scripts/bench"
OUT="$ROOT/build/bench"
CC="${CC:-cc}"

die() { echo "bench/build: $*" >&2; exit 1; }
command -v "$CC" >/dev/null 2>&1 || die "C compiler '$CC' not found"
[[ -r /usr/include/bpf/libbpf.h ]] || die "libbpf headers missing: apt-get install libbpf-dev"

mkdir -p "$OUT"
CFLAGS=(-O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -std=gnu11)

"$CC" "${CFLAGS[@]}" -o "$OUT/floor-consumer" "$SRC/floor-consumer.c" "$ROOT/native/src/attach_plan.c" "$ROOT/native/src/backstop_setup.c" -lbpf -lelf -lz \
	|| die "floor-consumer failed to build"
"$CC" "${CFLAGS[@]}" -pthread -o "$OUT/churn" "$SRC/churn.c" \
	|| die "churn failed to build"
echo "bench/build: wrote $OUT/floor-consumer $OUT/churn"
