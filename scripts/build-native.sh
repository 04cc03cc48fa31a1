#!/usr/bin/env bash
# Build the Node-API addon: build/Release/scope_tracker.node.
# node-gyp runs in native/ (its intermediates go to native/build/, git-ignored);
# the finished addon is installed into the repository's build/Release/.
# Offline by default: headers come from the system node (npm_config_nodedir=/usr).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NATIVE="$ROOT/native"
OUT="$ROOT/build/Release"
NODE_GYP="$ROOT/node_modules/node-gyp/bin/node-gyp.js"

die() { echo "build-native: $*" >&2; exit 1; }
command -v node >/dev/null 2>&1 || die "node not found"
[[ -f "$NODE_GYP" ]] || die "node-gyp missing ($NODE_GYP): run npm install"
[[ -d "$ROOT/node_modules/node-addon-api" ]] || die "node-addon-api missing: run npm install"
[[ -r /usr/include/bpf/libbpf.h ]] || die "libbpf headers missing: apt-get install libbpf-dev"

if [[ -z "${npm_config_nodedir:-}" ]]; then
	if [[ -r /usr/include/node/node_api.h ]]; then
		export npm_config_nodedir=/usr
	else
		echo "build-native: no /usr/include/node; node-gyp will try to download headers" >&2
	fi
fi

JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
(cd "$NATIVE" && node "$NODE_GYP" configure build --release --jobs "$JOBS") \
	|| die "node-gyp failed"

BUILT="$NATIVE/build/Release/scope_tracker.node"
[[ -f "$BUILT" ]] || die "node-gyp did not produce $BUILT"
mkdir -p "$OUT"
install -m 0755 "$BUILT" "$OUT/scope_tracker.node.tmp"
mv -f "$OUT/scope_tracker.node.tmp" "$OUT/scope_tracker.node"

node -e 'const m = require(process.argv[1]); if (typeof m.Tracker !== "function") process.exit(1)' \
	"$OUT/scope_tracker.node" || die "$OUT/scope_tracker.node does not load or export Tracker"
echo "build-native: wrote $OUT/scope_tracker.node"
