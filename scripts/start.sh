#!/usr/bin/env bash
# Starts the plugin under Node, installing and building whatever is missing first.
# Flags are plugin/main.ts's (see --help in README); relative paths are taken from the caller's directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$root" && bash scripts/setup.sh)
# glibc keeps freed memory for reuse (why: plugin/runtime/allocator-policy.ts); the caller's tunables, after ours, win.
tunables="$(cat "$root/plugin/runtime/glibc-tunables")"
export GLIBC_TUNABLES="${tunables}${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
# V8 skips full collections of a small heap (why: plugin/runtime/heap-policy.ts).
mapfile -t v8flags < "$root/plugin/runtime/v8-flags"
exec node "${v8flags[@]}" --import "$root/node_modules/tsx/dist/loader.mjs" "$root/plugin/main.ts" "$@"
