#!/usr/bin/env bash
# `npm run build` (and npm pack's prepack): writes dist/, the release, laid out like the checkout so
# that every module finds its neighbours by the same relative paths on both paths:
#   dist/plugin/main.js                 the plugin, one ES module bundled by esbuild with its
#   dist/plugin/endpoint-reporter-cli.js  dependencies (no tsx at run time); the CLI likewise
#   dist/plugin/runtime/v8-flags, glibc-tunables the runtime files the launchers read
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
# esbuild strips types without checking them: the release is built only from code that typechecks.
npx tsc -p . || die "tsc failed"
# One file per entry point: Node resolves and reads some 150 modules otherwise, a third of the
# start. The bundles sit in dist/plugin/, where the module that finds files by its own URL
# (plugin/package-root.ts) sits in the sources. Left outside:
# prom-client (imported only with --metrics-listen) and @grpc/proto-loader (grpc-js requires it
# only for channelz and ORCA, which the plugin does not serve). grpc-js is CommonJS: its
# require() of Node's modules needs a require in the ES module.
node_modules/.bin/esbuild plugin/main.ts plugin/cli/endpoint-reporter-cli.ts \
  --bundle --platform=node --format=esm --target=node20 \
  --outdir=dist/plugin --entry-names='[name]' \
  --external:prom-client --external:@grpc/proto-loader \
  --banner:js='import { createRequire as __bundleRequire } from "node:module"; const require = __bundleRequire(import.meta.url);' \
  --log-level=warning || die "esbuild failed"
install -D -m 0644 -t dist/plugin/runtime plugin/runtime/v8-flags plugin/runtime/glibc-tunables

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
