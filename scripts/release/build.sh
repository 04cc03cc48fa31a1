#!/usr/bin/env bash
# `npm run build` (and npm pack's prepack): writes dist/, the release, laid out like the checkout so
# that every module finds its neighbours by the same relative paths on both paths:
#   dist/plugin/**.js                   the plugin and the CLI, compiled by tsc (no tsx at run time)
#   dist/plugin/v8-flags, glibc-tunables the runtime files the launchers read
#   dist/build/*.bpf.o                  every CO-RE object (compiled once, runs on any kernel with BTF)
#   dist/build/Release/scope_tracker.node the Node-API addon (ABI-stable across Node >= 20)
#   dist/proto/                         the gRPC contract
#   dist/bin/                           the launchers (the package's bins)
# Builds the BPF objects and the addon first when they are missing or older than their sources.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
die() { echo "build: $*" >&2; exit 1; }

bash scripts/setup.sh

rm -rf dist
npx tsc -p tsconfig.build.json || die "tsc failed"
install -m 0644 plugin/v8-flags plugin/glibc-tunables dist/plugin/

shopt -s nullglob
objects=(build/*.bpf.o)
[ ${#objects[@]} -gt 0 ] || die "no build/*.bpf.o (scripts/build-bpf.sh)"
mkdir -p dist/build/Release dist/proto dist/bin
install -m 0644 "${objects[@]}" dist/build/
install -m 0755 build/Release/scope_tracker.node dist/build/Release/
install -m 0644 proto/*.proto dist/proto/
install -m 0755 scripts/release/launcher.sh dist/bin/endpoint-reporter
install -m 0755 scripts/release/launcher.sh dist/bin/endpoint-reporter-cli
# The shared libraries the package needs from the host: declared once, here, and shipped in dist/.
install -m 0644 scripts/release/runtime-libraries dist/runtime-libraries

# No compiler at run time means no TypeScript left to transpile either.
leftover=$(find dist/plugin -name '*.ts' -print -quit)
[ -z "$leftover" ] || die "TypeScript left in dist: $leftover"
echo "build: wrote dist/ ($(du -sh dist | cut -f1); objects: ${objects[*]##*/})" >&2
