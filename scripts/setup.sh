#!/usr/bin/env bash
# Installs what the plugin needs on a fresh Debian machine (as root) and builds what is missing:
# Debian packages, npm dependencies, the BPF object and the native addon. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev protobuf-compiler iproute2 iptables conntrack libcap2-bin python3 make g++ pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

export npm_config_nodedir="${npm_config_nodedir:-/usr}"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi

newer_than() { # newer_than OUTPUT INPUT...: true when OUTPUT is missing or older than an input
  local out=$1; shift
  [ -e "$out" ] || return 0
  [ -n "$(find "$@" -newer "$out" -print -quit 2>/dev/null)" ]
}
if newer_than build/tracker.bpf.o bpf scripts/build-bpf.sh || newer_than build/snapshot.bpf.o bpf scripts/build-bpf.sh || newer_than build/test/tracker-record-pad.bpf.o bpf scripts/build-bpf.sh; then bash scripts/build-bpf.sh >&2; fi
if newer_than build/Release/scope_tracker.node native bpf/tracker.h scripts/build-native.sh; then bash scripts/build-native.sh >&2; fi
