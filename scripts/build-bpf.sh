#!/usr/bin/env bash
# Build the kernel side: build/vmlinux.h (from this machine's BTF) and one CO-RE object per
# bpf/*.bpf.c: build/tracker.bpf.o (the event tracker) and build/snapshot.bpf.o (the socket
# snapshot iterator), and build/test/tracker-record-pad.bpf.o for the tests. Idempotent; any
# failure stops the script with a message.
#
# Environment overrides: CLANG (default: clang-14, else clang), BPFTOOL (default: bpftool),
# VMLINUX_BTF (default: /sys/kernel/btf/vmlinux), BPF_SOURCE_DIR and BPF_OUT_DIR (default: bpf/ and
# build/; scripts/bench/bpf-run-time.ts builds an earlier revision's sources elsewhere with them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BPF_DIR="${BPF_SOURCE_DIR:-$ROOT/bpf}"
OUT="${BPF_OUT_DIR:-$ROOT/build}"
SOURCES=(tracker snapshot)
SRC="$BPF_DIR/tracker.bpf.c"
VMLINUX_BTF="${VMLINUX_BTF:-/sys/kernel/btf/vmlinux}"

die() { echo "build-bpf: $*" >&2; exit 1; }

if [[ -z "${CLANG:-}" ]]; then
	if command -v clang-14 >/dev/null 2>&1; then CLANG=clang-14
	elif command -v clang >/dev/null 2>&1; then CLANG=clang
	else die "clang not found (install clang-14 or set CLANG=...)"; fi
fi
command -v "$CLANG" >/dev/null 2>&1 || die "compiler '$CLANG' not found"
BPFTOOL="${BPFTOOL:-bpftool}"
command -v "$BPFTOOL" >/dev/null 2>&1 || die "bpftool not found (apt-get install bpftool, or set BPFTOOL=...)"
[[ -r "$VMLINUX_BTF" ]] || die "kernel BTF not readable at $VMLINUX_BTF (kernel needs CONFIG_DEBUG_INFO_BTF=y)"
[[ -r /usr/include/bpf/bpf_helpers.h ]] || die "libbpf headers missing (/usr/include/bpf/bpf_helpers.h): apt-get install libbpf-dev"

case "$(uname -m)" in
	x86_64) ARCH=x86 ;;
	aarch64) ARCH=arm64 ;;
	*) die "unsupported architecture $(uname -m)" ;;
esac

mkdir -p "$OUT"

# vmlinux.h: regenerate into a temp file, replace only when the content changed so
# that the object is not rebuilt needlessly.
tmp="$(mktemp "$OUT/vmlinux.h.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
"$BPFTOOL" btf dump file "$VMLINUX_BTF" format c >"$tmp" || die "bpftool btf dump of $VMLINUX_BTF failed"
[[ -s "$tmp" ]] || die "bpftool produced an empty vmlinux.h"
if ! cmp -s "$tmp" "$OUT/vmlinux.h" 2>/dev/null; then
	chmod 644 "$tmp"
	mv -f "$tmp" "$OUT/vmlinux.h"
fi

for name in "${SOURCES[@]}"; do
	src="$BPF_DIR/$name.bpf.c"
	obj="$OUT/$name.bpf.o"
	"$CLANG" -g -O2 -target bpf -D__TARGET_ARCH_"$ARCH" \
		-Wall -Werror -Wno-unused-function \
		-I"$OUT" -I"$BPF_DIR" \
		-c "$src" -o "$obj.tmp" || die "clang failed to compile $src"
	mv -f "$obj.tmp" "$obj"
	# Sanity: the object must carry BTF (CO-RE needs it).
	"$BPFTOOL" btf dump file "$obj" >/dev/null 2>&1 || die "$obj has no usable BTF"
	echo "build-bpf: wrote $obj"
done

# Test-only variant: every record 8 bytes longer than struct tracker_event (see
# TRACKER_TEST_RECORD_PAD in bpf/tracker.bpf.c), for test/kernel/native-lifecycle.test.ts.
mkdir -p "$OUT/test"
"$CLANG" -g -O2 -target bpf -D__TARGET_ARCH_"$ARCH" -DTRACKER_TEST_RECORD_PAD=8 \
	-Wall -Werror -Wno-unused-function \
	-I"$OUT" -I"$BPF_DIR" \
	-c "$SRC" -o "$OUT/test/tracker-record-pad.bpf.o.tmp" || die "clang failed to compile $SRC (record pad test build)"
mv -f "$OUT/test/tracker-record-pad.bpf.o.tmp" "$OUT/test/tracker-record-pad.bpf.o"
echo "build-bpf: wrote $OUT/test/tracker-record-pad.bpf.o"
